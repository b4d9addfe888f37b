/* Copying a run's output to our stdout and stderr, live with follow, showing its
 * progress reports by the way (cli-progress.c), and detaching on Ctrl-C.
 *
 * A blocking libprismq call does not return on a signal (its event loop goes on after
 * EINTR), so Ctrl-C sets a flag and, while a follow's StreamOutput call runs, ends that
 * call with prismq_client_interrupt: at once, even while the run prints nothing. */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static volatile sig_atomic_t interrupted;
/* The client whose StreamOutput call Ctrl-C ends; NULL outside that call, so that
 * Ctrl-C during `run -f`'s StartRun still lets the run's id be known for the hint. */
static _Atomic(prismq_client *) follow_client; /* lock-free: fit for a handler */

static void on_interrupt(void) {
  interrupted = 1;
  prismq_client *c = follow_client;
  if (c) prismq_client_interrupt(c);
}

void cli_catch_sigint(void) { cli_os_on_interrupt(on_interrupt); }

struct follow {
  uint64_t next_seq; /* the seq after the last chunk written, for the reattach hint */
  int write_errno;
  cli_run *final;         /* the terminal run, from the last chunk of a follow */
  cli_progress *progress; /* with o->progress */
};

static int on_chunk(const Prismq__Runner__V1__OutputChunk *chunk, void *user) {
  struct follow *f = user;
  /* Stops a burst of chunks already received at once, before the interrupt's turn. */
  if (interrupted) return 1;
  /* A progress chunk has no data: without a display it is only a seq. */
  if (chunk->progress && f->progress) cli_progress_update(f->progress, chunk->progress);
  int fd = chunk->stream == PRISMQ__RUNNER__V1__OUTPUT_STREAM__OUTPUT_STREAM_STDERR ? 2 : 1;
  int rc = cli_progress_write(f->progress, fd, chunk->data.data, chunk->data.len);
  if (rc < 0) {
    f->write_errno = -rc;
    return 1;
  }
  if (chunk->seq) f->next_seq = chunk->seq + 1; /* the final chunk has none */
  if (chunk->run && !f->final) f->final = cli_run_dup(chunk->run);
  return 0;
}

static void print_detached(const cli_ctx *ctx, const char *run_id, uint64_t next_seq) {
  /* The commands to type next, with the --target of this one. */
  char prismq[1024];
  snprintf(prismq, sizeof prismq, "prismq%s%s", ctx->target_arg ? " --target " : "",
           ctx->target_arg ? ctx->target_arg : "");
  fprintf(stderr,
          "prismq: detached from run %s, which keeps running (stop it with: %s cancel %s)\n",
          run_id, prismq, run_id);
  fprintf(stderr, "prismq: reattach with: %s logs %s -f", prismq, run_id);
  if (next_seq > 1)
    fprintf(stderr, "  (add --from %llu to skip the output shown)", (unsigned long long)next_seq);
  fputc('\n', stderr);
}

int cli_follow(cli_ctx *ctx, const char *run_id, const cli_follow_opts *o) {
  prismq_client *c = cli_client(ctx);
  if (!c) return CLI_EXIT_ERROR;
  if (o->follow) cli_catch_sigint();
  struct follow f = {o->start_seq, 0, NULL, NULL};
  if (o->progress) f.progress = cli_progress_new(cli_progress_mode(), 0);
  Prismq__Runner__V1__StreamOutputRequest req = PRISMQ__RUNNER__V1__STREAM_OUTPUT_REQUEST__INIT;
  req.run_id = (char *)run_id;
  req.start_seq = o->start_seq;
  req.follow = o->follow;
  req.stream = o->stream;
  prismq_status st = {.code = PRISMQ_CODE_CANCELLED};
  /* No deadline: a follow lasts as long as the run, and a replay as long as the
   * reader takes it. A Ctrl-C after follow_client is set but before the call starts
   * is not lost: the library keeps it for the call, which then returns at once. */
  follow_client = c;
  if (!interrupted) st = prismq_stream_output(c, &req, PRISMQ_NO_DEADLINE, on_chunk, &f);
  follow_client = NULL;
  cli_progress_end(f.progress); /* before the lines below, which follow it */

  int code;
  if (f.write_errno == EPIPE) {
    code = CLI_EXIT_BROKEN_PIPE;
  } else if (f.write_errno) {
    fprintf(stderr, "prismq: writing the output: %s\n", strerror(f.write_errno));
    code = CLI_EXIT_ERROR;
  } else if (st.code == PRISMQ_CODE_OK && o->follow && f.final) {
    if (f.final->status != PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_COMPLETED) {
      fputs("prismq: run ", stderr);
      cli_print_outcome(stderr, f.final);
    }
    code = cli_run_exit(f.final);
  } else if (interrupted) {
    print_detached(ctx, run_id, f.next_seq);
    code = CLI_EXIT_INTERRUPTED;
  } else if (st.code != PRISMQ_CODE_OK) {
    code = cli_rpc_error(&st);
  } else if (o->follow) {
    fprintf(stderr, "prismq: the output of run %s ended before the run did\n", run_id);
    code = CLI_EXIT_ERROR;
  } else {
    code = CLI_EXIT_OK;
  }
  prismq_run_free(f.final);
  return code;
}
