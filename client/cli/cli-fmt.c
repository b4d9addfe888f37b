/* What the commands share about the connection, runs and formatting for people. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static void out_of_memory(void) {
  fputs("prismq: out of memory\n", stderr);
  exit(CLI_EXIT_ERROR);
}

void *cli_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) out_of_memory();
  return p;
}

void *cli_xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p) out_of_memory();
  return p;
}

void *cli_xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) out_of_memory();
  return q;
}

char *cli_xstrdup(const char *s) {
  char *d = strdup(s);
  if (!d) out_of_memory();
  return d;
}

void cli_append(char **s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *add = NULL;
  int n = vasprintf(&add, fmt, ap);
  va_end(ap);
  if (n < 0) out_of_memory();
  size_t len = *s ? strlen(*s) : 0;
  *s = cli_xrealloc(*s, len + (size_t)n + 1);
  memcpy(*s + len, add, (size_t)n + 1);
  free(add);
}

prismq_client *cli_client(cli_ctx *ctx) {
  if (ctx->client) return ctx->client;
  int rc = prismq_client_connect(&ctx->client, &ctx->opts);
  if (rc < 0) {
    fprintf(stderr, "prismq: cannot connect: %s\n", prismq_strerror(rc));
    return NULL;
  }
  return ctx->client;
}

void cli_put_text(FILE *f, const char *s, const char *newline) {
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    /* The NULL test guards the fputs in the same branch: two separate tests of
     * ch == '\n' left gcc -O3 a path, once inlined with newline NULL, that it had
     * not yet proven dead when it checks for NULL arguments (-Wnonnull). */
    if (ch == '\n') {
      if (!newline) break;
      fputs(newline, f);
    } else {
      fputc(ch < 0x20 || ch == 0x7f ? '?' : ch, f);
    }
  }
}

/* How a field of a request is named: a parameter as -p names it. */
#define PARAM_FIELD "parameters."

/* 1 if every field of v[0..n) is a parameter. */
static int all_parameters(const prismq_field_violation *v, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (strncmp(v[i].field, PARAM_FIELD, strlen(PARAM_FIELD)) != 0) return 0;
  return 1;
}

/* The count, then each violation on a line of its own: one long line joining them all
 * (the message) is hard to read. */
static void print_violations(const prismq_field_violation *v, size_t n) {
  int params = all_parameters(v, n);
  fprintf(stderr, "%zu bad %s\n", n, params ? "parameters" : "fields");
  for (size_t i = 0; i < n; i++) {
    const char *name = v[i].field + (params ? strlen(PARAM_FIELD) : 0);
    fputs("prismq:   ", stderr);
    if (name[0]) {
      cli_put_text(stderr, name, NULL);
      fputs(": ", stderr);
    }
    cli_put_text(stderr, v[i].description, NULL);
    fputc('\n', stderr);
  }
}

int cli_rpc_error(const prismq_status *st) {
  const prismq_field_violation *v;
  size_t n = prismq_status_violations(st, &v);
  fprintf(stderr, "prismq: %s: ", prismq_code_name(st->code));
  /* One violation is the message itself: the plain line says it best. */
  if (n > 1) {
    print_violations(v, n);
  } else {
    cli_put_text(stderr, st->message, NULL);
    fputc('\n', stderr);
  }
  return CLI_EXIT_ERROR;
}

const char *cli_status_name(int status) {
  const ProtobufCEnumValue *v =
      protobuf_c_enum_descriptor_get_value(&prismq__runner__v1__run_status__descriptor, status);
  /* Every name starts with the enum's prefix; people read the rest. */
  return v ? v->name + strlen("RUN_STATUS_") : "?";
}

int cli_status_terminal(int status) {
  switch (status) {
  case PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_COMPLETED:
  case PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_FAILED:
  case PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_CANCELLED:
  case PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_TIMED_OUT:
  case PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_LOST: return 1;
  default: return 0;
  }
}

int cli_run_exit(const cli_run *run) {
  switch (run->status) {
  case PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_COMPLETED: return CLI_EXIT_OK;
  case PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_FAILED:
    if (run->term_signal > 0 && run->term_signal < 128) return 128 + run->term_signal;
    if (run->exit_code > 0 && run->exit_code < 256) return run->exit_code;
    return CLI_EXIT_NOT_STARTED;
  case PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_CANCELLED: return CLI_EXIT_CANCELLED;
  case PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_TIMED_OUT: return CLI_EXIT_TIMED_OUT;
  case PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_LOST: return CLI_EXIT_LOST;
  case PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_QUEUED:
  case PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_RUNNING: return CLI_EXIT_ACTIVE;
  default: return CLI_EXIT_ERROR;
  }
}

/* A run's signal is the server's number: Linux's (the same on x86_64 and arm64). Their
 * names as glibc's sigabbrev_np gives them, in a table of our own, so that a client on
 * another system (other numbers, or no sigabbrev_np) names them the same. */
static const char *const signal_names[] = {
    NULL,   "HUP",  "INT",  "QUIT", "ILL",    "TRAP",   "ABRT",  "BUS",  "FPE",  "KILL", "USR1",
    "SEGV", "USR2", "PIPE", "ALRM", "TERM",   "STKFLT", "CHLD",  "CONT", "STOP", "TSTP", "TTIN",
    "TTOU", "URG",  "XCPU", "XFSZ", "VTALRM", "PROF",   "WINCH", "POLL", "PWR",  "SYS"};

/* "SIGKILL", or "signal 77" for a number without a name (the real-time ones). */
static void format_signal(char *buf, size_t cap, int sig) {
  if (sig > 0 && sig < (int)(sizeof signal_names / sizeof signal_names[0]))
    snprintf(buf, cap, "SIG%s", signal_names[sig]);
  else
    snprintf(buf, cap, "signal %d", sig);
}

void cli_print_outcome(FILE *f, const cli_run *run) {
  char sig[32];
  fprintf(f, "%s %s", run->run_id, cli_status_name(run->status));
  if (run->status == PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_FAILED && run->term_signal > 0) {
    format_signal(sig, sizeof sig, run->term_signal);
    fprintf(f, ": killed by signal %d (%s)", run->term_signal, sig);
  } else if (run->status == PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_FAILED &&
             run->exit_code != 0) {
    fprintf(f, ": exit code %d", run->exit_code);
  } else if (run->error_message[0]) {
    fputs(": ", f);
    cli_put_text(f, run->error_message, NULL);
  }
  fputc('\n', f);
}

void cli_format_exit(char *buf, size_t cap, const cli_run *run) {
  /* pid 0: the program never ran (queued, could not start, dry-run); a LOST run's
   * process ended unseen. */
  if (!cli_status_terminal(run->status) || run->pid == 0 ||
      run->status == PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_LOST)
    snprintf(buf, cap, "-");
  else if (run->term_signal > 0)
    format_signal(buf, cap, run->term_signal);
  else
    snprintf(buf, cap, "%d", run->exit_code);
}

void cli_format_duration(char *buf, size_t cap, uint64_t ms) {
  uint64_t s = ms / 1000;
  if (ms < 1000)
    snprintf(buf, cap, "%" PRIu64 "ms", ms);
  else if (s < 60)
    snprintf(buf, cap, "%" PRIu64 ".%" PRIu64 "s", s, ms % 1000 / 100);
  else if (s < 3600)
    snprintf(buf, cap, "%" PRIu64 "m%02" PRIu64 "s", s / 60, s % 60);
  else if (s < 86400)
    snprintf(buf, cap, "%" PRIu64 "h%02" PRIu64 "m", s / 3600, s % 3600 / 60);
  else
    snprintf(buf, cap, "%" PRIu64 "d%02" PRIu64 "h", s / 86400, s % 86400 / 3600);
}

void cli_format_time(char *buf, size_t cap, int64_t ms) {
  struct tm tm;
  time_t t = (time_t)(ms / 1000);
  if (ms <= 0 || !localtime_r(&t, &tm) || strftime(buf, cap, "%Y-%m-%d %H:%M:%S", &tm) == 0)
    snprintf(buf, cap, "-");
}

int64_t cli_now_ms(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

cli_run *cli_run_dup(const cli_run *run) {
  size_t n = prismq__runner__v1__run__get_packed_size(run);
  uint8_t *buf = cli_xmalloc(n);
  prismq__runner__v1__run__pack(run, buf);
  cli_run *copy = prismq__runner__v1__run__unpack(NULL, n, buf);
  free(buf);
  if (!copy) out_of_memory(); /* what we packed decodes: only allocation can fail */
  return copy;
}
