/* follow_run: starts a run of a PrismQ Runner module and follows its output, with
 * libprismq's blocking API.
 *
 *   follow_run [-t TARGET] MODULE [KEY=VALUE...]
 *
 * The run's stdout goes to stdout and its stderr to stderr as it is produced. At the
 * end, "run ID STATUS exit code N" goes to stderr, and follow_run exits with the run's
 * exit code: 0 when it completed, the exit code when it failed, 128 + the signal when a
 * signal ended it, 1 for any other end and for errors (2 for usage errors).
 * TARGET ("host:port" or "unix:/path") defaults to $PRISMQ_TARGET, then
 * 127.0.0.1:50051.
 *
 * Build against an installed libprismq:
 *   cc follow_run.c $(pkg-config --cflags --libs prismq) -o follow_run */
#define _POSIX_C_SOURCE 200809L /* getopt, also under -std=c11 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <prismq/client.h>

typedef Prismq__Runner__V1__StartRunRequest__ParametersEntry param_entry;

struct follow {
  int ended; /* the last chunk came, with the terminal run: */
  int status, exit_code, term_signal;
  int write_errno;
};

static void usage(void) {
  fprintf(stderr, "usage: follow_run [-t TARGET] MODULE [KEY=VALUE...]\n");
}

static void rpc_failed(const char *rpc, const prismq_status *st) {
  fprintf(stderr, "follow_run: %s: %s: %s\n", rpc, prismq_code_name(st->code), st->message);
}

/* Copies each chunk to our stdout or stderr; notes how the run ended from the last
 * one (the chunk is the library's: we keep the values, not the pointer). */
static int on_chunk(const Prismq__Runner__V1__OutputChunk *chunk, void *user) {
  struct follow *f = user;
  FILE *to =
      chunk->stream == PRISMQ__RUNNER__V1__OUTPUT_STREAM__OUTPUT_STREAM_STDERR ? stderr : stdout;
  errno = 0;
  if (chunk->data.len > 0 &&
      (fwrite(chunk->data.data, 1, chunk->data.len, to) != chunk->data.len || fflush(to) != 0)) {
    f->write_errno = errno ? errno : EIO;
    return 1; /* stops the stream: nobody reads our output any more */
  }
  if (chunk->run) {
    f->ended = 1;
    f->status = chunk->run->status;
    f->exit_code = chunk->run->exit_code;
    f->term_signal = chunk->run->term_signal;
  }
  return 0;
}

static const char *run_status_name(int status) {
  const ProtobufCEnumValue *v =
      protobuf_c_enum_descriptor_get_value(&prismq__runner__v1__run_status__descriptor, status);
  return v ? v->name : "?";
}

static int exit_status(const struct follow *f) {
  if (f->status == PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_COMPLETED) return 0;
  if (f->term_signal > 0) return 128 + f->term_signal;
  if (f->exit_code > 0 && f->exit_code < 256) return f->exit_code;
  return 1;
}

/* Starts the run and follows it; returns our exit status. */
static int follow_run(prismq_client *c, const char *module, int nparams, char **params) {
  param_entry *entries = calloc((size_t)nparams + 1, sizeof *entries);
  param_entry **ptrs = calloc((size_t)nparams + 1, sizeof *ptrs);
  Prismq__Runner__V1__Run *run = NULL;
  struct follow f = {0, 0, 0, 0, 0};
  int code = 1;
  if (!entries || !ptrs) {
    fprintf(stderr, "follow_run: out of memory\n");
    goto out;
  }
  for (int i = 0; i < nparams; i++) {
    char *eq = strchr(params[i], '=');
    if (!eq) {
      usage();
      code = 2;
      goto out;
    }
    *eq = '\0';
    prismq__runner__v1__start_run_request__parameters_entry__init(&entries[i]);
    entries[i].key = params[i];
    entries[i].value = eq + 1;
    ptrs[i] = &entries[i];
  }

  Prismq__Runner__V1__StartRunRequest start = PRISMQ__RUNNER__V1__START_RUN_REQUEST__INIT;
  start.module_id = (char *)module;
  start.n_parameters = (size_t)nparams;
  start.parameters = ptrs;
  prismq_status st = prismq_start_run(&run, c, &start, 0);
  if (st.code != PRISMQ_CODE_OK) {
    rpc_failed("StartRun", &st);
    goto out;
  }

  Prismq__Runner__V1__StreamOutputRequest req = PRISMQ__RUNNER__V1__STREAM_OUTPUT_REQUEST__INIT;
  req.run_id = run->run_id;
  req.follow = 1;
  /* Following lasts as long as the run: no deadline. */
  st = prismq_stream_output(c, &req, PRISMQ_NO_DEADLINE, on_chunk, &f);
  if (f.write_errno) {
    fprintf(stderr, "follow_run: writing the output: %s\n", strerror(f.write_errno));
    goto out;
  }
  if (st.code != PRISMQ_CODE_OK) {
    rpc_failed("StreamOutput", &st);
    goto out;
  }
  if (!f.ended) {
    fprintf(stderr, "follow_run: the stream ended without the final run\n");
    goto out;
  }
  fprintf(stderr, "run %s %s exit code %d\n", run->run_id, run_status_name(f.status), f.exit_code);
  code = exit_status(&f);

out:
  prismq_run_free(run);
  free(ptrs);
  free(entries);
  return code;
}

int main(int argc, char **argv) {
  prismq_client_opts opts = PRISMQ_CLIENT_OPTS_INIT;
  int opt;
  while ((opt = getopt(argc, argv, "t:")) != -1) {
    if (opt != 't') {
      usage();
      return 2;
    }
    opts.target = optarg;
  }
  if (optind >= argc) {
    usage();
    return 2;
  }
  prismq_client *c = NULL;
  int rc = prismq_client_connect(&c, &opts);
  if (rc < 0) {
    fprintf(stderr, "follow_run: cannot connect: %s\n", prismq_strerror(rc));
    return 1;
  }
  int code = follow_run(c, argv[optind], argc - optind - 1, argv + optind + 1);
  prismq_client_free(c);
  return code;
}
