/* fuzz_client: bytes from a server into the client core (client/gclient.c): HTTP/2
 * over a real unix socket, response headers and trailers (on_header, status,
 * grpc-message and grpc-status-details-bin decoding), DATA into the response deframer,
 * and how calls end.
 *
 * Per input, gcl_conn_new connects to a unix socket that this harness listens on (in a
 * scratch directory); calls are started; once the client has sent its requests, the
 * input is written to the accepted socket as the server's answer, and the server's
 * side is closed. What the client writes is read and dropped.
 *
 * What must hold beyond "no crash, no undefined behaviour, no leak": once the server
 * has gone, every call ends, its on_done firing exactly once with a status (a code of
 * 0 or more, a terminated message); no descriptor is left open.
 *
 * Input: byte 0 is a mode:
 *   bit 0     send an empty SETTINGS frame (the server's preface) first
 *   bits 1-2  how many calls (1 to 4; streams 1, 3, 5, 7), of these kinds in turn:
 *             a Run answer (its messages decoded as libprismq does), a stream of
 *             OutputChunks (decoded too), a call whose client stops at the first
 *             message, a call cancelled by the client before any answer
 *   bit 3     accept response messages of at most 64 bytes (default 64 MiB)
 *   bit 4     write the answer in pieces of 50 bytes, the client running after each
 * and the rest is what the server sends. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "fuzzkit.h"
#include "gclient.h"
#include "google/rpc/status.pb-c.h"
#include "grpcwire.h"
#include "prismq/runner/v1/runner.pb-c.h"

static const uint8_t server_preface[] =
    "\x00\x00\x00\x04\x00\x00\x00\x00\x00"; /* SETTINGS, empty */

static char target[256];
static int listen_fd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fz_setup();
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s/s", fz_tempdir("client"));
  snprintf(target, sizeof target, "unix:%s", sa.sun_path);
  listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
      listen(listen_fd, 4) != 0)
    fz_fail("listen on %s: %s", sa.sun_path, strerror(errno));
  return 0;
}

enum kind { RUN, CHUNKS, STOP_AT_FIRST, CANCELLED };

struct fcall {
  enum kind kind;
  gcl_call *call;
  int done;
};

static const char *const paths[] = {
    [RUN] = "/prismq.runner.v1.Runner/GetRun",
    [CHUNKS] = "/prismq.runner.v1.Runner/StreamOutput",
    [STOP_AT_FIRST] = "/prismq.runner.v1.Runner/StreamOutput",
    [CANCELLED] = "/prismq.runner.v1.Runner/WaitRun",
};

static int on_msg(void *user, const uint8_t *msg, size_t len) {
  struct fcall *fc = user;
  FZ_CHECK(!fc->done, "a message after on_done");
  switch (fc->kind) {
  case RUN:
    prismq__runner__v1__run__free_unpacked(prismq__runner__v1__run__unpack(NULL, len, msg), NULL);
    return 0;
  case CHUNKS:
    prismq__runner__v1__output_chunk__free_unpacked(
        prismq__runner__v1__output_chunk__unpack(NULL, len, msg), NULL);
    return 0;
  default: return 1;
  }
}

static void on_done(void *user, const gcl_status *st) {
  struct fcall *fc = user;
  FZ_CHECK(!fc->done, "on_done fired twice");
  fc->done = 1;
  /* A grpc-status outside 0..16 from the server is passed on as it is (prismq_code_name
   * calls it UNKNOWN); no call ends with a negative code, which is no status at all. */
  FZ_CHECK(st->code >= GW_OK, "a call ended with status %d (%s)", st->code, st->message);
  FZ_CHECK(memchr(st->message, '\0', sizeof st->message), "status message not terminated");
  /* Details come with a failure the server sent, bounded; decoding them (as libprismq
   * does) reads them all, for the sanitizers. */
  FZ_CHECK(!st->details || (st->code != GW_OK && st->details_len <= GCL_MAX_STATUS_DETAILS),
           "details of %zu bytes with status %d", st->details_len, st->code);
  if (st->details)
    google__rpc__status__free_unpacked(
        google__rpc__status__unpack(NULL, st->details_len, st->details), NULL);
}

static void drain(evutil_socket_t fd, short what, void *arg) {
  (void)what;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) {
  }
  /* The client has closed: stop, or the loop would never rest. */
  if (n == 0) event_del(arg);
}

/* Writes all of p (the socket is non-blocking), running the client when it is full.
 * Returns 0, or -1 once the client has closed. */
static int write_all(struct event_base *base, int fd, const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EPIPE || errno == ECONNRESET) return -1;
      FZ_CHECK(errno == EAGAIN, "write to the client: %s", strerror(errno));
      event_base_loop(base, EVLOOP_ONCE);
      continue;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  uint8_t mode = data[0];
  size_t ncalls = 1 + ((mode >> 1) & 3);
  data++;
  size--;
  int fd_mark = fz_lowest_free_fd();

  struct event_base *base = event_base_new();
  FZ_CHECK(base, "event_base_new");
  gcl_conn_opts opts = GCL_CONN_OPTS_INIT;
  if (mode & 8) opts.max_recv_msg = 64;
  gcl_conn *c = NULL;
  char err[256];
  if (gcl_conn_new(&c, base, target, &opts, err, sizeof err) != 0) fz_fail("gcl_conn_new: %s", err);
  int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
  FZ_CHECK(fd >= 0, "accept: %s", strerror(errno));
  struct event *ev = event_new(base, fd, EV_READ | EV_PERSIST, drain, event_self_cbarg());
  FZ_CHECK(ev && event_add(ev, NULL) == 0, "event_new");

  struct fcall calls[4] = {
      {RUN, NULL, 0}, {CHUNKS, NULL, 0}, {STOP_AT_FIRST, NULL, 0}, {CANCELLED, NULL, 0}};
  static const uint8_t req[] = {0x0a, 0x01, 'x'}; /* a run_id of "x" */
  for (size_t i = 0; i < ncalls; i++)
    FZ_CHECK(gcl_call_start(&calls[i].call, c, paths[calls[i].kind], req, sizeof req, 0, on_msg,
                            on_done, &calls[i]) == 0,
             "gcl_call_start");
  /* The client's preface and requests go out first: the answer refers to its streams. */
  event_base_loop(base, EVLOOP_NONBLOCK);
  if (ncalls > CANCELLED && !calls[CANCELLED].done) gcl_call_cancel(calls[CANCELLED].call);

  int closed = (mode & 1) && write_all(base, fd, server_preface, sizeof server_preface - 1) < 0;
  size_t piece = mode & 16 ? 50 : size;
  while (size > 0 && !closed) {
    size_t k = piece < size ? piece : size;
    closed = write_all(base, fd, data, k) < 0;
    event_base_loop(base, EVLOOP_NONBLOCK);
    data += k;
    size -= k;
  }
  shutdown(fd, SHUT_WR);
  for (;;) {
    size_t done = 0;
    for (size_t i = 0; i < ncalls; i++) done += calls[i].done;
    if (done == ncalls) break;
    /* Blocks until the client reads the end of the stream: a call that never ends
     * shows as a libFuzzer timeout. */
    event_base_loop(base, EVLOOP_ONCE);
  }
  gcl_conn_free(c);
  event_free(ev);
  close(fd);
  event_base_free(base);
  int fd_now = fz_lowest_free_fd();
  FZ_CHECK(fd_now == fd_mark, "a descriptor was left open (lowest free %d, was %d)", fd_now,
           fd_mark);
  return 0;
}
