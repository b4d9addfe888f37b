/* Copying a run's output to our stdout and stderr, live with follow, and detaching on
 * Ctrl-C.
 *
 * Ctrl-C only sets a flag; the chunk callback sees it and stops the stream. A blocking
 * libprismq call does not return on a signal, though (its event loop restarts after
 * EINTR), so while the run is silent no chunk comes to look at the flag. A follow is
 * therefore a chain of StreamOutput calls with a short deadline, each resuming at the
 * seq after the last chunk received (the documented way to resume, so no byte is lost
 * or repeated); the flag is checked between them. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* How long one call of a follow lasts at most: how late Ctrl-C may take effect while
 * the run prints nothing. The round trip to the server must stay below it. */
#define POLL_MS 500

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) {
  (void)sig;
  interrupted = 1;
}

void cli_catch_sigint(void) {
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  /* A shell starts background jobs with SIGINT ignored: Ctrl-C is not for them. */
  if (sigaction(SIGINT, NULL, &old) == 0 && old.sa_handler != SIG_IGN)
    sigaction(SIGINT, &sa, NULL);
}

struct follow {
  uint64_t next_seq; /* where the next call starts */
  int progressed;    /* a chunk came during the current call */
  int write_errno;
  cli_run *final; /* the terminal run, from the last chunk of a follow */
};

static int write_all(int fd, const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue; /* our SIGINT handler */
      return -errno;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int on_chunk(const Prismq__Runner__V1__OutputChunk *chunk, void *user) {
  struct follow *f = user;
  if (interrupted) return 1;
  int fd = chunk->stream == PRISMQ__RUNNER__V1__OUTPUT_STREAM__OUTPUT_STREAM_STDERR ? 2 : 1;
  int rc = write_all(fd, chunk->data.data, chunk->data.len);
  if (rc < 0) {
    f->write_errno = -rc;
    return 1;
  }
  f->progressed = 1;
  if (chunk->seq) f->next_seq = chunk->seq + 1; /* the final chunk has none */
  if (chunk->run) {
    /* A call that ran out of time just after the final chunk is resumed, and the
     * final chunk comes again. */
    prismq_run_free(f->final);
    f->final = cli_run_dup(chunk->run);
  }
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
  struct follow f = {o->start_seq, 0, 0, NULL};
  Prismq__Runner__V1__StreamOutputRequest req = PRISMQ__RUNNER__V1__STREAM_OUTPUT_REQUEST__INIT;
  req.run_id = (char *)run_id;
  req.follow = o->follow;
  req.stream = o->stream;
  prismq_status st = {PRISMQ_CODE_CANCELLED, ""};
  /* Without follow, the client's default deadline bounds each call; a replay too long
   * for one call goes on as long as calls make progress. */
  while (!interrupted) {
    req.start_seq = f.next_seq;
    f.progressed = 0;
    st = prismq_stream_output(c, &req, o->follow ? POLL_MS : 0, on_chunk, &f);
    if (f.write_errno || st.code != PRISMQ_CODE_DEADLINE_EXCEEDED ||
        !(o->follow || f.progressed))
      break;
  }

  int code;
  if (f.write_errno == EPIPE) {
    code = 128 + SIGPIPE;
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
    code = 128 + SIGINT;
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
