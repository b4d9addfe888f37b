/* Unit tests for the prismq commands end to end (client/cli/cmd-*.c, cli-follow.c)
 * against testpeer.h's scripted server (on a thread of its own: the CLI's client is the
 * blocking one): the request each command line becomes (options onto fields, deadlines
 * with their slack), what is printed on stdout and stderr, and the exit status a run's
 * outcome gives; ls's paging up to --limit; logs copying each stream to its own
 * descriptor byte for byte; RPC errors, with the server's field violations one a line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "grpc/health/v1/health.pb-c.h"
#include "testcapture.h"
#include "../testpeer.h"

#define P_RUNNER     "/prismq.runner.v1.Runner/"
#define ST(x)        PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_##x
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

typedef Prismq__Runner__V1__Run Run;

struct fx {
  struct peer peer;
  struct event_base *base;
  Run run;                       /* what GetRun, WaitRun and CancelRun answer */
  int fail_start;                /* StartRun answers INVALID_ARGUMENT */
  const char *const *violations; /* ... with these field violations (field, description,
                                  * ..., NULL) in its details */
  char *details;                 /* their grpc-status-details-bin */
  int page_runs[4];              /* ListRuns: how many runs each page holds (then no more pages) */
  int empty_pages_continue;      /* ListRuns: an empty page still names page 1 next */
  int stream_final;              /* StreamOutput ends with a final chunk holding `run` */
  int stream_progress;           /* StreamOutput: a progress report after the stderr chunk */
  int ctrl_c;                    /* StreamOutput: SIGINT comes instead of an answer */
  int serving;                   /* what Health/Check answers */
};

/* ---- the server's side ---- */

static void page_reply(struct fx *f, struct pstream *s) {
  Prismq__Runner__V1__ListRunsRequest *q = (Prismq__Runner__V1__ListRunsRequest *)peer_request(
      s, &prismq__runner__v1__list_runs_request__descriptor);
  int page = q->page_token[0] ? q->page_token[1] - '0' : 0; /* "t1", "t2", ... */
  protobuf_c_message_free_unpacked(&q->base, NULL);
  assert_true(page >= 0 && page < 4);
  Run runs[8], *rp[8];
  char ids[8][32], token[16] = "";
  int n = f->page_runs[page];
  assert_true(n >= 0 && n <= 8);
  for (int i = 0; i < n; i++) {
    runs[i] = (Run)PRISMQ__RUNNER__V1__RUN__INIT;
    snprintf(ids[i], sizeof ids[i], "p%dr%d", page, i);
    runs[i].run_id = ids[i];
    runs[i].module_id = "mod";
    runs[i].status = ST(COMPLETED);
    rp[i] = &runs[i];
  }
  if (page + 1 < 4 && f->page_runs[page + 1]) snprintf(token, sizeof token, "t%d", page + 1);
  if (f->empty_pages_continue) snprintf(token, sizeof token, "t1");
  Prismq__Runner__V1__ListRunsResponse resp = PRISMQ__RUNNER__V1__LIST_RUNS_RESPONSE__INIT;
  resp.runs = rp;
  resp.n_runs = (size_t)n;
  resp.next_page_token = token;
  peer_reply(s, &resp.base);
}

static void stream_reply(struct fx *f, struct pstream *s) {
  if (f->ctrl_c) {
    /* Ctrl-C while the follow waits: the stream stays open, only the CLI can end it. */
    test_interrupt_self();
    return;
  }
  static const struct {
    int stream;
    const char *data;
  } out[] = {{1, "out 1\n"}, {2, "err \x01\xff\n"}, {1, "out 2 no newline"}};
  peer_begin(s, NULL);
  for (size_t i = 0; i < ARRAY_LEN(out); i++) {
    Prismq__Runner__V1__OutputChunk c = PRISMQ__RUNNER__V1__OUTPUT_CHUNK__INIT;
    c.seq = i + 1;
    c.stream = out[i].stream;
    c.data.data = (uint8_t *)out[i].data;
    c.data.len = strlen(out[i].data);
    peer_send_pb(s, &c.base);
    if (i == 1 && f->stream_progress) {
      Prismq__Runner__V1__Progress pr = PRISMQ__RUNNER__V1__PROGRESS__INIT;
      pr.done = 3;
      pr.total = 10;
      pr.message = "copying";
      c = (Prismq__Runner__V1__OutputChunk)PRISMQ__RUNNER__V1__OUTPUT_CHUNK__INIT;
      c.seq = 10;
      c.progress = &pr;
      peer_send_pb(s, &c.base);
    }
  }
  if (f->stream_final) {
    Prismq__Runner__V1__OutputChunk c = PRISMQ__RUNNER__V1__OUTPUT_CHUNK__INIT;
    c.run = &f->run;
    peer_send_pb(s, &c.base);
  }
  peer_end(s, PEER_OK_TRAILERS);
}

static void handler(struct peer *p, struct pstream *s) {
  struct fx *f = p->arg;
  if (strcmp(s->path, P_RUNNER "StartRun") == 0) {
    if (f->fail_start) {
      free(f->details);
      f->details = f->violations ? peer_details_b64(3, "", NULL, NULL, f->violations, 0) : NULL;
      peer_status_details(s, "3", "missing%20required%20parameter%20%22bytes%22", f->details);
      return;
    }
    Run r = PRISMQ__RUNNER__V1__RUN__INIT;
    r.run_id = "run-1";
    r.status = ST(QUEUED);
    peer_reply(s, &r.base);
  } else if (strcmp(s->path, P_RUNNER "ListRuns") == 0) {
    page_reply(f, s);
  } else if (strcmp(s->path, P_RUNNER "StreamOutput") == 0) {
    stream_reply(f, s);
  } else if (strcmp(s->path, "/grpc.health.v1.Health/Check") == 0) {
    Grpc__Health__V1__HealthCheckResponse h = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    h.status = f->serving;
    peer_reply(s, &h.base);
  } else if (strcmp(s->path, P_RUNNER "GetRun") == 0 && strcmp(f->run.run_id, "gone") == 0) {
    peer_status(s, "5", "run%20%22gone%22%20not%20found");
  } else {
    peer_reply(s, &f->run.base);
  }
}

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  if (!f) return -1;
  f->base = event_base_new();
  if (!f->base) return -1;
  peer_init(&f->peer, f->base);
  f->peer.handler = handler;
  f->peer.arg = f;
  f->run = (Run)PRISMQ__RUNNER__V1__RUN__INIT;
  f->run.run_id = "R";
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fx *f = *state;
  peer_thread_fini(&f->peer);
  peer_fini(&f->peer);
  event_base_free(f->base);
  free(f->details);
  free(f);
  return 0;
}

/* ---- the command line's side ---- */

/* Runs `prismq NAME ARGS...` against the peer as main would; returns the exit status,
 * with cap holding stdout and stderr. The peer's state is the test's again after. */
static int run_cmd(struct fx *f, const struct cli_cmd *cmd, const char *const *args) {
  char name[64], *argv[24], store[24][128];
  snprintf(name, sizeof name, "prismq %s", cmd->name);
  int argc = 0;
  argv[argc++] = name;
  for (; args[argc - 1]; argc++) {
    assert_true(argc < 23);
    snprintf(store[argc], sizeof store[argc], "%s", args[argc - 1]);
    argv[argc] = store[argc];
  }
  argv[argc] = NULL;
  cli_ctx ctx = {PRISMQ_CLIENT_OPTS_INIT, NULL, NULL};
  ctx.opts.target = f->peer.target;
  peer_thread_start(&f->peer);
  optind = 0;
  capture_start();
  int code = cmd->exec(&ctx, argc, argv);
  capture_stop();
  prismq_client_free(ctx.client);
  peer_thread_stop(&f->peer);
  return code;
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static ProtobufCMessage *request_of(struct fx *f, size_t i, const ProtobufCMessageDescriptor *d) {
  assert_true(i < f->peer.nstreams);
  return peer_request(&f->peer.streams[i], d);
}

/* run: every option lands in its field of the StartRunRequest; the new run's id on
 * stdout, or the whole Run with --json; a refusal is the server's code and message. */
static void test_run(void **state) {
  struct fx *f = *state;
  int code = run_cmd(f, &cli_cmd_run,
                     ARGS("emit", "-p", "bytes=10", "--param", "expr=a=b", "--label", "team=ops",
                          "--timeout", "1m30s", "--request-id", "key-1"));
  assert_int_equal(code, CLI_EXIT_OK);
  assert_string_equal(cap.out, "run-1\n");
  assert_string_equal(cap.err, "");
  Prismq__Runner__V1__StartRunRequest *q = (Prismq__Runner__V1__StartRunRequest *)request_of(
      f, 0, &prismq__runner__v1__start_run_request__descriptor);
  assert_string_equal(f->peer.streams[0].path, P_RUNNER "StartRun");
  assert_string_equal(q->module_id, "emit");
  assert_int_equal(q->n_parameters, 2);
  assert_string_equal(q->parameters[0]->key, "bytes");
  assert_string_equal(q->parameters[0]->value, "10");
  assert_string_equal(q->parameters[1]->key, "expr");
  assert_string_equal(q->parameters[1]->value, "a=b");
  assert_int_equal(q->n_labels, 1);
  assert_string_equal(q->labels[0]->key, "team");
  assert_string_equal(q->labels[0]->value, "ops");
  assert_int_equal(q->timeout_ms, 90000);
  assert_string_equal(q->request_id, "key-1");
  protobuf_c_message_free_unpacked(&q->base, NULL);

  code = run_cmd(f, &cli_cmd_run, ARGS("emit", "--json"));
  assert_int_equal(code, CLI_EXIT_OK);
  assert_int_equal(strncmp(cap.out, "{\n  \"runId\": \"run-1\",\n", 22), 0);
  assert_non_null(strstr(cap.out, "\"status\": \"RUN_STATUS_QUEUED\""));

  f->fail_start = 1;
  code = run_cmd(f, &cli_cmd_run, ARGS("emit"));
  assert_int_equal(code, CLI_EXIT_ERROR);
  assert_string_equal(cap.out, "");
  assert_string_equal(cap.err, "prismq: INVALID_ARGUMENT: missing required parameter \"bytes\"\n");
}

/* run refused for its parameters: with several field violations, their count and one
 * line each (the parameters by name, other fields by path), text made harmless; with one,
 * the message alone. */
static void test_run_violations(void **state) {
  struct fx *f = *state;
  static const char *const params[] = {"parameters.x",
                                       "unknown parameter \"x\"",
                                       "parameters.n",
                                       "parameter \"n\" is 0\x1b[2J",
                                       "parameters.",
                                       "no name",
                                       NULL};
  static const char *const fields[] = {
      "labels.team", "too long", "parameters.n", "too small", "", "the request as a whole", NULL};
  static const char *const one[] = {"parameters.bytes", "required", NULL};
  static const struct {
    const char *const *violations;
    const char *err;
  } cases[] = {
      {params,
       "prismq: INVALID_ARGUMENT: 3 bad parameters\n"
       "prismq:   x: unknown parameter \"x\"\n"
       "prismq:   n: parameter \"n\" is 0?[2J\n"
       "prismq:   no name\n"},
      {fields,
       "prismq: INVALID_ARGUMENT: 3 bad fields\n"
       "prismq:   labels.team: too long\n"
       "prismq:   parameters.n: too small\n"
       "prismq:   the request as a whole\n"},
      {one, "prismq: INVALID_ARGUMENT: missing required parameter \"bytes\"\n"},
  };
  f->fail_start = 1;
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    f->violations = cases[i].violations;
    int code = run_cmd(f, &cli_cmd_run, ARGS("emit", "-p", "x=1", "-p", "n=0"));
    assert_int_equal(code, CLI_EXIT_ERROR);
    assert_string_equal(cap.out, "");
    assert_string_equal(cap.err, cases[i].err);
  }
}

/* wait: the outcome line and the run's exit status; --timeout goes in the request, and
 * the call's deadline is that plus the slack for the answer. */
static void test_wait(void **state) {
  struct fx *f = *state;
  const struct {
    Run run;
    const char *out;
    int code;
  } cases[] = {
      {{.status = ST(COMPLETED), .pid = 5}, "R COMPLETED\n", 0},
      {{.status = ST(FAILED), .pid = 5, .exit_code = 3, .error_message = "boom"},
       "R FAILED: exit code 3\n",
       3},
      {{.status = ST(FAILED), .pid = 5, .exit_code = -1, .term_signal = SIGKILL},
       "R FAILED: killed by signal 9 (SIGKILL)\n",
       137},
      {{.status = ST(FAILED), .error_message = "cannot start \"x\""},
       "R FAILED: cannot start \"x\"\n",
       127},
      {{.status = ST(CANCELLED), .error_message = "cancelled"}, "R CANCELLED: cancelled\n", 75},
      {{.status = ST(TIMED_OUT), .error_message = "timed out after 5 ms"},
       "R TIMED_OUT: timed out after 5 ms\n",
       124},
      {{.status = ST(LOST), .error_message = "the server stopped"},
       "R LOST: the server stopped\n",
       69},
      {{.status = ST(RUNNING)}, "R RUNNING\n", 99},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    Run r = PRISMQ__RUNNER__V1__RUN__INIT;
    r.run_id = "R";
    r.status = cases[i].run.status;
    r.pid = cases[i].run.pid;
    r.exit_code = cases[i].run.exit_code;
    r.term_signal = cases[i].run.term_signal;
    if (cases[i].run.error_message) r.error_message = cases[i].run.error_message;
    f->run = r;
    /* One WaitRun call each: this server answers at once, whatever its timeout. */
    int code = run_cmd(f, &cli_cmd_wait, ARGS("R", "--no-progress"));
    assert_string_equal(cap.out, cases[i].out);
    if (code != cases[i].code) fail_msg("case %zu: exit %d, expected %d", i, code, cases[i].code);
  }
  size_t first = f->peer.nstreams;
  run_cmd(f, &cli_cmd_wait, ARGS("R", "--timeout", "2s", "--no-progress"));
  Prismq__Runner__V1__WaitRunRequest *q = (Prismq__Runner__V1__WaitRunRequest *)request_of(
      f, first, &prismq__runner__v1__wait_run_request__descriptor);
  assert_string_equal(q->run_id, "R");
  assert_int_equal(q->timeout_ms, 2000);
  protobuf_c_message_free_unpacked(&q->base, NULL);
  assert_string_equal(f->peer.streams[first].timeout, "32000m");
  assert_string_equal(f->peer.streams[0].timeout, ""); /* no --timeout: no deadline */

  /* Showing progress, it waits in steps of half a second: a run that ends takes one. */
  f->run.status = ST(COMPLETED);
  first = f->peer.nstreams;
  assert_int_equal(run_cmd(f, &cli_cmd_wait, ARGS("R", "--timeout", "2s")), 0);
  assert_int_equal(f->peer.nstreams, first + 1);
  q = (Prismq__Runner__V1__WaitRunRequest *)request_of(
      f, first, &prismq__runner__v1__wait_run_request__descriptor);
  assert_int_equal(q->timeout_ms, 500);
  protobuf_c_message_free_unpacked(&q->base, NULL);
}

/* cancel: --grace in the request, the deadline after it; the outcome, or JSON. */
static void test_cancel(void **state) {
  struct fx *f = *state;
  f->run.status = ST(CANCELLED);
  f->run.error_message = "cancelled";
  int code = run_cmd(f, &cli_cmd_cancel, ARGS("R", "--grace", "2s"));
  assert_int_equal(code, CLI_EXIT_OK);
  assert_string_equal(cap.out, "R CANCELLED: cancelled\n");
  Prismq__Runner__V1__CancelRunRequest *q = (Prismq__Runner__V1__CancelRunRequest *)request_of(
      f, 0, &prismq__runner__v1__cancel_run_request__descriptor);
  assert_int_equal(q->grace_ms, 2000);
  protobuf_c_message_free_unpacked(&q->base, NULL);
  assert_string_equal(f->peer.streams[0].timeout, "32000m");
  code = run_cmd(f, &cli_cmd_cancel, ARGS("R", "--json"));
  assert_int_equal(code, CLI_EXIT_OK);
  assert_non_null(strstr(cap.out, "\"status\": \"RUN_STATUS_CANCELLED\""));
  assert_string_equal(f->peer.streams[1].timeout,
                      "35000m"); /* the server's default grace + slack */
}

/* status: one field a line, multi-line text indented under its first line, control
 * characters harmless; an unknown run is the server's NOT_FOUND, exit 1. */
static void test_status(void **state) {
  struct fx *f = *state;
  Prismq__Runner__V1__Run__ParametersEntry pe = PRISMQ__RUNNER__V1__RUN__PARAMETERS_ENTRY__INIT,
                                           *pp = &pe;
  pe.key = "bytes";
  pe.value = "10\n20";
  f->run.module_id = "emit";
  f->run.status = ST(FAILED);
  f->run.pid = 4242;
  f->run.exit_code = 2;
  f->run.error_message = "line one\nline \x1b two";
  f->run.stdout_bytes = 12;
  f->run.parameters = &pp;
  f->run.n_parameters = 1;
  int code = run_cmd(f, &cli_cmd_status, ARGS("R"));
  assert_int_equal(code, CLI_EXIT_OK);
  static const char *const lines[] = {
      "run         R\n",
      "module      emit\n",
      "status      FAILED\n",
      "exit        2\n",
      "error       line one\n            line ? two\n",
      "created     -\n",
      "pid         4242\n",
      "output      12 bytes stdout, 0 bytes stderr\n",
      "parameter   bytes=10\n            20\n",
  };
  for (size_t i = 0; i < ARRAY_LEN(lines); i++)
    if (!strstr(cap.out, lines[i])) fail_msg("missing \"%s\" in:\n%s", lines[i], cap.out);
  assert_int_equal(strncmp(cap.out, lines[0], strlen(lines[0])), 0);

  f->run.run_id = "gone";
  code = run_cmd(f, &cli_cmd_status, ARGS("gone"));
  assert_int_equal(code, CLI_EXIT_ERROR);
  assert_string_equal(cap.out, "");
  assert_string_equal(cap.err, "prismq: NOT_FOUND: run \"gone\" not found\n");
}

/* ls: a server that answers empty pages with a token forever does not hold the CLI: an
 * empty page ends the listing. */
static void test_ls_stops_at_an_empty_page(void **state) {
  struct fx *f = *state;
  f->page_runs[0] = 1;
  f->empty_pages_continue = 1;
  int code = run_cmd(f, &cli_cmd_ls, ARGS("--limit", "0"));
  assert_int_equal(code, CLI_EXIT_OK);
  assert_int_equal(f->peer.nstreams, 2);
  assert_non_null(strstr(cap.out, "\np0r0 "));
}

/* ls: the filters in the request; pages fetched until --limit runs (the last page asked
 * only for what is missing, and what a server sends beyond it dropped); the table; with
 * --json one document whose token continues after the last run shown. */
static void test_ls_paging(void **state) {
  struct fx *f = *state;
  f->page_runs[0] = 2;
  f->page_runs[1] = 2;
  f->page_runs[2] = 2;
  int code = run_cmd(f, &cli_cmd_ls,
                     ARGS("--status", "running", "--status", "FAILED", "--module", "mod", "--label",
                          "a=b", "--limit", "3"));
  assert_int_equal(code, CLI_EXIT_OK);
  assert_int_equal(f->peer.nstreams, 2);
  Prismq__Runner__V1__ListRunsRequest *q = (Prismq__Runner__V1__ListRunsRequest *)request_of(
      f, 0, &prismq__runner__v1__list_runs_request__descriptor);
  assert_int_equal(q->n_statuses, 2);
  assert_int_equal(q->statuses[0], ST(RUNNING));
  assert_int_equal(q->statuses[1], ST(FAILED));
  assert_string_equal(q->module_id, "mod");
  assert_int_equal(q->n_labels, 1);
  assert_string_equal(q->labels[0]->key, "a");
  assert_string_equal(q->labels[0]->value, "b");
  assert_int_equal(q->page_size, 3);
  assert_string_equal(q->page_token, "");
  protobuf_c_message_free_unpacked(&q->base, NULL);
  q = (Prismq__Runner__V1__ListRunsRequest *)request_of(
      f, 1, &prismq__runner__v1__list_runs_request__descriptor);
  assert_int_equal(q->page_size, 1);
  assert_string_equal(q->page_token, "t1");
  protobuf_c_message_free_unpacked(&q->base, NULL);
  /* Header and three runs, columns aligned. */
  assert_int_equal(strncmp(cap.out, "RUN ID  MODULE  STATUS     EXIT  STARTED  DURATION\n", 51), 0);
  assert_non_null(strstr(cap.out, "\np0r0    mod     COMPLETED  -     -        -\n"));
  assert_non_null(strstr(cap.out, "\np0r1    "));
  assert_non_null(strstr(cap.out, "\np1r0    "));
  assert_null(strstr(cap.out, "p1r1"));

  code = run_cmd(f, &cli_cmd_ls, ARGS("--json", "--limit", "0"));
  assert_int_equal(code, CLI_EXIT_OK);
  assert_int_equal(f->peer.nstreams, 5); /* all three pages */
  assert_non_null(strstr(cap.out, "\"runId\": \"p2r1\""));
  assert_non_null(strstr(cap.out, "\n  \"nextPageToken\": \"\"\n}\n"));
  code = run_cmd(f, &cli_cmd_ls, ARGS("--json", "--limit", "2"));
  assert_int_equal(code, CLI_EXIT_OK);
  assert_non_null(strstr(cap.out, "\n  \"nextPageToken\": \"t1\"\n}\n"));
}

/* logs: stdout chunks to descriptor 1, stderr chunks to 2, byte for byte; the stream
 * and start options in the request; with -f, the run's outcome line and exit status. */
static void test_logs(void **state) {
  struct fx *f = *state;
  int code = run_cmd(f, &cli_cmd_logs, ARGS("R"));
  assert_int_equal(code, CLI_EXIT_OK);
  assert_string_equal(cap.out, "out 1\nout 2 no newline");
  assert_string_equal(cap.err, "err \x01\xff\n");
  Prismq__Runner__V1__StreamOutputRequest *q =
      (Prismq__Runner__V1__StreamOutputRequest *)request_of(
          f, 0, &prismq__runner__v1__stream_output_request__descriptor);
  assert_string_equal(q->run_id, "R");
  assert_false(q->follow);
  assert_int_equal(q->stream, 0);
  assert_int_equal(q->start_seq, 0);
  protobuf_c_message_free_unpacked(&q->base, NULL);

  const struct {
    const char *const *args;
    int stream;
    uint64_t from;
  } opts[] = {
      {ARGS("R", "--stdout"), 1, 0},
      {ARGS("R", "--stderr", "--from", "5"), 2, 5},
      {ARGS("--stdout", "R", "--stderr"), 0, 0},
  };
  for (size_t i = 0; i < ARRAY_LEN(opts); i++) {
    size_t at = f->peer.nstreams;
    assert_int_equal(run_cmd(f, &cli_cmd_logs, opts[i].args), CLI_EXIT_OK);
    q = (Prismq__Runner__V1__StreamOutputRequest *)request_of(
        f, at, &prismq__runner__v1__stream_output_request__descriptor);
    assert_int_equal(q->stream, opts[i].stream);
    assert_int_equal(q->start_seq, opts[i].from);
    protobuf_c_message_free_unpacked(&q->base, NULL);
  }

  f->stream_final = 1;
  f->run.status = ST(FAILED);
  f->run.pid = 5;
  f->run.exit_code = 4;
  size_t at = f->peer.nstreams;
  code = run_cmd(f, &cli_cmd_logs, ARGS("R", "-f"));
  assert_int_equal(code, 4);
  assert_string_equal(cap.out, "out 1\nout 2 no newline");
  assert_string_equal(cap.err, "err \x01\xff\nprismq: run R FAILED: exit code 4\n");
  q = (Prismq__Runner__V1__StreamOutputRequest *)request_of(
      f, at, &prismq__runner__v1__stream_output_request__descriptor);
  assert_true(q->follow);
  protobuf_c_message_free_unpacked(&q->base, NULL);
  assert_string_equal(f->peer.streams[at].timeout, ""); /* a follow has no deadline */

  f->run.status = ST(COMPLETED);
  f->run.exit_code = 0;
  code = run_cmd(f, &cli_cmd_logs, ARGS("R", "-f"));
  assert_int_equal(code, CLI_EXIT_OK);
  assert_string_equal(cap.err, "err \x01\xff\n"); /* nothing more for a completed run */

  /* A follow whose stream ends without the run's end is an error. */
  f->stream_final = 0;
  code = run_cmd(f, &cli_cmd_logs, ARGS("R", "-f"));
  assert_int_equal(code, CLI_EXIT_ERROR);
  assert_non_null(strstr(cap.err, "prismq: the output of run R ended before the run did\n"));
}

/* run -f with a progress report, stderr not a terminal: the report as a plain line on
 * stderr, after the line it came after, the output untouched; --no-progress drops it,
 * and logs -f never shows it. */
static void test_run_follow_progress(void **state) {
  struct fx *f = *state;
  f->stream_final = 1;
  f->stream_progress = 1;
  f->run.status = ST(COMPLETED);
  int code = run_cmd(f, &cli_cmd_run, ARGS("emit", "-f"));
  assert_int_equal(code, CLI_EXIT_OK);
  assert_string_equal(cap.out, "out 1\nout 2 no newline");
  assert_string_equal(cap.err, "err \x01\xff\nprogress 3/10 30% copying\n");
  code = run_cmd(f, &cli_cmd_run, ARGS("emit", "-f", "--no-progress"));
  assert_int_equal(code, CLI_EXIT_OK);
  assert_string_equal(cap.out, "out 1\nout 2 no newline");
  assert_string_equal(cap.err, "err \x01\xff\n");
  code = run_cmd(f, &cli_cmd_logs, ARGS("R", "-f"));
  assert_int_equal(code, CLI_EXIT_OK);
  assert_string_equal(cap.err, "err \x01\xff\n");
}

/* health: the serving status by name (or JSON), exit 0 only when SERVING; the service
 * asked about in the request. */
static void test_health(void **state) {
  struct fx *f = *state;
  static const struct {
    int serving;
    const char *out;
    int code;
  } cases[] = {
      {GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING, "SERVING\n", CLI_EXIT_OK},
      {GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING, "NOT_SERVING\n",
       CLI_EXIT_ERROR},
      {GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN,
       "SERVICE_UNKNOWN\n", CLI_EXIT_ERROR},
      {77, "UNKNOWN\n", CLI_EXIT_ERROR},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    f->serving = cases[i].serving;
    assert_int_equal(run_cmd(f, &cli_cmd_health, ARGS("prismq.runner.v1.Runner")), cases[i].code);
    assert_string_equal(cap.out, cases[i].out);
  }
  Grpc__Health__V1__HealthCheckRequest *q = (Grpc__Health__V1__HealthCheckRequest *)request_of(
      f, 0, &grpc__health__v1__health_check_request__descriptor);
  assert_string_equal(q->service, "prismq.runner.v1.Runner");
  protobuf_c_message_free_unpacked(&q->base, NULL);
  f->serving = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
  assert_int_equal(run_cmd(f, &cli_cmd_health, ARGS("--json")), CLI_EXIT_OK);
  assert_string_equal(cap.out, "{\n  \"status\": \"SERVING\"\n}\n");
}

/* Ctrl-C during a follow detaches: exit 128 + SIGINT, the run left alone, and the
 * commands to stop it or to reattach (from where the output stopped) on stderr. Last
 * of the tests: the flag it sets in the CLI stays set for the process. */
static void test_follow_ctrl_c(void **state) {
  struct fx *f = *state;
  f->ctrl_c = 1;
  int code = run_cmd(f, &cli_cmd_logs, ARGS("R", "-f", "--from", "7"));
  assert_int_equal(code, 128 + SIGINT);
  assert_string_equal(cap.out, "");
  assert_string_equal(
      cap.err,
      "prismq: detached from run R, which keeps running (stop it with: prismq cancel R)\n"
      "prismq: reattach with: prismq logs R -f  (add --from 7 to skip the output shown)\n");
  assert_int_equal(f->peer.nstreams, 1);
  assert_true(f->peer.streams[0].rst_received); /* the call was cancelled on the wire */
  assert_int_equal(f->peer.streams[0].rst_code, NGHTTP2_CANCEL);
}

int main(void) {
#ifdef SIGPIPE
  signal(SIGPIPE, SIG_IGN);
#endif
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_run),
      T(test_run_violations),
      T(test_wait),
      T(test_cancel),
      T(test_status),
      T(test_ls_paging),
      T(test_ls_stops_at_an_empty_page),
      T(test_logs),
      T(test_run_follow_progress),
      T(test_health),
      T(test_follow_ctrl_c), /* last: see there */
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
