/* prismq, the operators' command line of PrismQ Runner: what the commands share.
 *
 * Each command is one file, cmd-NAME.c, defining a `const struct cli_cmd cli_cmd_NAME`
 * listed in prismq.c's table. The program uses only the public API of libprismq
 * (<prismq/client.h>) and protobuf-c, and common/utf8 compiled in. It is a program, not
 * a library: on out of memory it prints "prismq: out of memory" and exits 1 (cli_xmalloc
 * and friends).
 *
 * Output conventions: results on stdout, diagnostics on stderr prefixed "prismq: ",
 * gRPC errors as "prismq: CODE_NAME: message". Exit statuses: enum cli_exit, and the
 * run's own outcome for the commands that wait for a run (cli_run_exit). The table is
 * in docs/cli.md. */
#ifndef PRISMQ_CLI_H
#define PRISMQ_CLI_H

#include <getopt.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <prismq/client.h>

#include "compat.h" /* its macros only (COMPAT_PRINTF): compat.c is libprismq's, hidden */

typedef Prismq__Runner__V1__Run cli_run;

/* Exit statuses of prismq (besides a run's own exit code, 1..255, and 128 + signal). */
enum cli_exit {
  CLI_EXIT_OK = 0,
  CLI_EXIT_ERROR = 1,         /* an RPC failed, cannot connect, cannot write the output */
  CLI_EXIT_USAGE = 2,         /* bad command line */
  CLI_EXIT_LOST = 69,         /* the run is LOST (EX_UNAVAILABLE) */
  CLI_EXIT_CANCELLED = 75,    /* the run was CANCELLED */
  CLI_EXIT_ACTIVE = 99,       /* wait --timeout passed: the run is still QUEUED or RUNNING */
  CLI_EXIT_TIMED_OUT = 124,   /* the run TIMED_OUT (as timeout(1)) */
  CLI_EXIT_NOT_STARTED = 127, /* the run FAILED without an exit code: its program could not
                               * start (as a shell's "command not found") */
  CLI_EXIT_INTERRUPTED = 130, /* 128 + SIGINT: Ctrl-C detached from a followed run */
  CLI_EXIT_BROKEN_PIPE = 141  /* 128 + SIGPIPE: the reader of our output went away (the
                               * same number on Windows, which has no SIGPIPE) */
};

/* What the commands share: the connection settings (global options) and the client,
 * connected on first use by cli_client(). */
typedef struct cli_ctx {
  prismq_client_opts opts;
  const char *target_arg; /* --target as given (NULL if not), for hints we print */
  prismq_client *client;  /* NULL until cli_client(); main frees it */
} cli_ctx;

/* One command. */
struct cli_cmd {
  const char *name;
  const char *args;    /* the synopsis after "prismq NAME" */
  const char *summary; /* one line for the command list */
  const char *help;    /* the options and what the command prints, for --help */
  /* Runs the command. argv[0] is "prismq NAME" (getopt's messages name it), argv[1..]
   * its arguments; getopt is reset (optind = 0) before the call. Returns the exit
   * status of prismq. */
  int (*exec)(cli_ctx *ctx, int argc, char **argv);
};

extern const struct cli_cmd cli_cmd_cancel, cli_cmd_health, cli_cmd_help, cli_cmd_logs, cli_cmd_ls,
    cli_cmd_modules, cli_cmd_presets, cli_cmd_run, cli_cmd_status, cli_cmd_wait;

/* The command called `name`, or NULL (prismq.c). */
const struct cli_cmd *cli_find_cmd(const char *name);

/* Prints the whole program's usage and command list on `f` (prismq.c). */
void cli_print_usage(FILE *f);

/* ---- options (cli-args.c) ---- */

/* Long options of the commands: --help on all (option 'h', also -h), --json on those
 * that read (option 'j'). */
#define CLI_OPT_HELP \
  { "help", no_argument, NULL, 'h' }
#define CLI_OPT_JSON \
  { "json", no_argument, NULL, 'j' }

/* The end of a command's option switch, for 'h' and anything unknown: for 'h' prints
 * the command's help on stdout and returns CLI_EXIT_OK; otherwise (getopt has already
 * named the bad option on stderr) returns cli_usage_error(cmd, NULL). */
int cli_opt_other(const struct cli_cmd *cmd, int opt);

/* Checks that the arguments left after the options (argv[optind..argc-1]) number
 * min..max; returns 0, or cli_usage_error()'s value. */
int cli_check_args(const struct cli_cmd *cmd, int argc, char **argv, int min, int max);

/* Prints "prismq NAME: <fmt...>" (if fmt is not NULL), the command's usage line and a
 * pointer to its --help on stderr. Returns CLI_EXIT_USAGE. */
int cli_usage_error(const struct cli_cmd *cmd, const char *fmt, ...) COMPAT_PRINTF(2, 3);

/* Prints a command's full help (usage line, summary, help text) on `f`. */
void cli_print_help(const struct cli_cmd *cmd, FILE *f);

/* Parses the argument of option --NAME of cmd as a duration: one or more NUMBER UNIT
 * groups, UNIT one of ms, s, m, h ("500ms", "30s", "1h30m"), or "0"; below UINT32_MAX
 * ms (UINT32_MAX means "no deadline" to the library). Returns 0 and sets *out_ms, or
 * cli_usage_error()'s value. */
int cli_opt_duration(uint32_t *out_ms, const struct cli_cmd *cmd, const char *name,
                     const char *arg);

/* Parses a decimal unsigned number (no sign, no spaces) up to `max`. Returns 0 and
 * sets *out, or -EINVAL / -ERANGE. */
int cli_parse_uint(uint64_t *out, const char *s, uint64_t max);

/* A map field of a request being built from KEY=VALUE arguments: `items` are messages
 * of a map-entry type (fields key and value) whose strings point into the arguments. */
typedef struct cli_map {
  size_t n;
  ProtobufCMessage **items;
} cli_map;

/* Adds the argument of option --NAME of cmd, KEY=VALUE, to `m` as an entry of type
 * `entry`: splits `arg` at its first '=' (writing a NUL there; the strings stay in
 * `arg`). Returns 0, or cli_usage_error()'s value (no '=' or an empty key). */
int cli_opt_map(cli_map *m, const ProtobufCMessageDescriptor *entry, const struct cli_cmd *cmd,
                const char *name, char *arg);

/* Frees the entries (not the strings) and resets `m`. */
void cli_map_clear(cli_map *m);

/* Parses a run status name, case-insensitively, with or without "RUN_STATUS_"
 * ("running", "RUN_STATUS_FAILED"). Returns 0 and sets *out, or -EINVAL. */
int cli_parse_status(int *out, const char *s);

/* ---- runs and formatting (cli-fmt.c) ---- */

/* malloc, calloc, realloc and strdup that exit(CLI_EXIT_ERROR) with "prismq: out of
 * memory" instead of returning NULL. */
void *cli_xmalloc(size_t n);
void *cli_xcalloc(size_t n, size_t size);
void *cli_xrealloc(void *p, size_t n);
char *cli_xstrdup(const char *s);

/* Appends the printf-formatted text to the string *s (NULL: none yet), reallocated (free
 * it), exiting as cli_xmalloc does on out of memory. */
void cli_append(char **s, const char *fmt, ...) COMPAT_PRINTF(2, 3);

/* The client of ctx, connecting it on first use. NULL after printing the reason on
 * stderr (an option the library refuses, e.g. TLS). */
prismq_client *cli_client(cli_ctx *ctx);

/* Prints "prismq: CODE_NAME: message" on stderr; or, for a status with several field
 * violations (prismq_status_violations), "prismq: CODE_NAME: N bad parameters" and a
 * line "prismq:   NAME: description" for each (N bad fields and their whole paths when
 * not all are parameters). Returns CLI_EXIT_ERROR. */
int cli_rpc_error(const prismq_status *st);

/* Writes `s` on `f` with control characters (and DEL) shown as '?', so that text from
 * the server cannot drive the terminal. A newline ends the text if `newline` is NULL,
 * else is written as `newline` (e.g. "\n" and an indent). */
void cli_put_text(FILE *f, const char *s, const char *newline);

/* The short name of a run status ("RUNNING"), or "?" for a value out of the enum. */
const char *cli_status_name(int status);

/* 1 if `status` is terminal (COMPLETED, FAILED, CANCELLED, TIMED_OUT, LOST). */
int cli_status_terminal(int status);

/* prismq's exit status for the run as it is (see enum cli_exit): 0 COMPLETED; FAILED:
 * 128 + signal, else its exit code, else CLI_EXIT_NOT_STARTED; the CLI_EXIT_ code of
 * CANCELLED, TIMED_OUT, LOST; CLI_EXIT_ACTIVE while QUEUED or RUNNING. */
int cli_run_exit(const cli_run *run);

/* Prints "RUN_ID STATUS[: detail]\n" on `f`, the detail being "exit code N" or "killed by
 * signal N (SIGNAME)" for a FAILED run with either, else the first line of its
 * error_message. */
void cli_print_outcome(FILE *f, const cli_run *run);

/* Formats the exit column of a run: "-" while not terminal or when no process exited,
 * else "SIGNAME" or the exit code. */
void cli_format_exit(char *buf, size_t cap, const cli_run *run);

/* Formats a duration in ms for people: "850ms", "4.2s", "3m04s", "2h05m", "3d04h". */
void cli_format_duration(char *buf, size_t cap, uint64_t ms);

/* Formats Unix time in ms as local "YYYY-MM-DD HH:MM:SS", or "-" for 0. */
void cli_format_time(char *buf, size_t cap, int64_t ms);

/* The time of `clock` (CLOCK_REALTIME: Unix time; CLOCK_MONOTONIC) in ms. */
int64_t cli_now_ms(clockid_t clock);

/* A deep copy of `run` (through protobuf-c pack/unpack). Free with prismq_run_free. */
cli_run *cli_run_dup(const cli_run *run);

/* ---- tables (cli-table.c) ---- */

/* Rows of text printed as aligned columns: headers first, cells padded to the widest
 * of their column (in UTF-8 characters), two spaces apart, the last column unpadded. */
typedef struct cli_table cli_table;

/* A table of `ncols` columns titled `headers` (copied). Never NULL. */
cli_table *cli_table_new(size_t ncols, const char *const *headers);

/* Adds a row of ncols cells (copied, control characters replaced by '?'; NULL prints
 * as ""). */
void cli_table_add(cli_table *t, const char *const *cells);

/* Prints the table on `f`. */
void cli_table_print(const cli_table *t, FILE *f);

/* Frees the table. Accepts NULL. */
void cli_table_free(cli_table *t);

/* ---- JSON (cli-json.c) ---- */

/* Prints `msg` on `f` as one JSON document (and a newline) in the proto3 JSON mapping:
 * lowerCamelCase field names, every field present (defaults included), enums by name,
 * 64-bit integers as strings, maps as objects, messages not set omitted. */
void cli_json_message(FILE *f, const ProtobufCMessage *msg);

/* Prints `s` as a JSON string literal: quotes, backslashes and control characters
 * escaped, bytes that are not valid UTF-8 replaced by \ufffd. */
void cli_json_string(FILE *f, const char *s);

/* ---- a run's progress (cli-progress.c) ---- */

/* Enough for a rendered line of any width (cli_progress_render keeps within its cap). */
#define CLI_PROGRESS_LINE_MAX 1024

/* Renders the status line of progress report `p` for a terminal `width` columns wide
 * (0: 80) into buf (cap >= 1 bytes, NUL-terminated), in at most width - 1 columns (the
 * last one stays free: a line that wrapped could not be erased) and cap - 1 bytes:
 *   - total > 0: " 30% [#########.....................] 3/10", the bar 10..30 columns;
 *   - total 0 (unknown): a spinner turning with elapsed_ms ("|", "/", "-", "\\"), and
 *     the count done;
 * then the elapsed time ("0:07", "1:02:03"), the rate ("0.4/s"; left out when `rate` is
 * negative: not known yet) and the message, cut to fit with "...". Control characters
 * and bytes that are not UTF-8 in the message show as '?'; a character beyond ASCII
 * counts two columns (wide ones do). What does not fit goes: the bar shrinks to 10
 * columns to give the message room, the message is cut, and where 10 columns of bar do
 * not fit the bar goes. Returns the length written. */
size_t cli_progress_render(char *buf, size_t cap, const Prismq__Runner__V1__Progress *p,
                           uint64_t elapsed_ms, double rate, unsigned width);

/* The plain line of `p` (no newline) for where there is no terminal: "progress 3/10
 * 30% MESSAGE", or, the total unknown, "progress 42 MESSAGE"; the message whole (up to
 * cap), made harmless as above. Returns the length written (cap >= 1). */
size_t cli_progress_plain(char *buf, size_t cap, const Prismq__Runner__V1__Progress *p);

/* How progress is shown on stderr. */
enum cli_progress_mode {
  CLI_PROGRESS_PLAIN, /* a plain line when it tells something new, at most one a second */
  CLI_PROGRESS_BAR    /* the status line, redrawn in place */
};

/* CLI_PROGRESS_BAR when stderr is a terminal that takes cursor controls
 * (cli_os_ansi_terminal: $TERM set and not "dumb", or a Windows console), else
 * CLI_PROGRESS_PLAIN. */
int cli_progress_mode(void);

/* A run's progress shown on stderr while the run's output passes (writes to stdout and
 * stderr go through cli_progress_write). Nothing shows before the first report; then a
 * thread of its own shows the latest:
 *   - CLI_PROGRESS_BAR: the status line, redrawn at most 10 times a second when it
 *     changes (the elapsed time at least every second). Output that lands where it is
 *     (stderr, and stdout when it is the same file) erases it first ("\r" ESC[K), and
 *     it comes back at the next redraw once that output has ended its line;
 *   - CLI_PROGRESS_PLAIN: a line (cli_progress_plain) when the whole percentage, the
 *     total or the message changed (the count, when the total is unknown), at most one
 *     a second and only at the start of a line of stderr.
 * The rate is the change of done over time since the first report (or since done went
 * back or the total changed), by the reports' updated_at_ms where set, once they span
 * a second. The elapsed time counts from started_at_ms (Unix ms; 0: now). Free with
 * cli_progress_end. */
typedef struct cli_progress cli_progress;

cli_progress *cli_progress_new(int mode, int64_t started_at_ms);

/* Makes `report` the latest (copied); the same report again changes nothing. */
void cli_progress_update(cli_progress *p, const Prismq__Runner__V1__Progress *report);

/* Writes data[0..len) on descriptor fd (STDOUT_FILENO or STDERR_FILENO) whole, retrying
 * after EINTR, clear of the status line. p may be NULL: a plain write. Returns 0 or a
 * negative errno. */
int cli_progress_write(cli_progress *p, int fd, const uint8_t *data, size_t len);

/* Stops the display and frees it, leaving the last report shown: the status line as a
 * line of its own, or the plain line if it was not printed yet (after a newline when
 * the output ended mid-line). Nothing if no report came. Accepts NULL. */
void cli_progress_end(cli_progress *p);

/* ---- following output (cli-follow.c) ---- */

/* Makes SIGINT (Ctrl-C) detach instead of ending prismq: it sets a flag that
 * cli_follow() checks before its call, and ends that call at once if it is running
 * (prismq_client_interrupt). Leaves SIGINT ignored if it is (a background job).
 * Idempotent. */
void cli_catch_sigint(void);

typedef struct cli_follow_opts {
  uint64_t start_seq; /* the first chunk wanted (seq starts at 1; 0 = from the start) */
  int stream;         /* an OutputStream value: 0 both, 1 stdout only, 2 stderr only */
  int follow;         /* go on live until the run ends */
  int progress;       /* show the run's progress reports on stderr (cli_progress_mode()) */
} cli_follow_opts;

#define CLI_FOLLOW_OPTS_INIT \
  { 0, 0, 0, 0 }

/* Copies the output of run `run_id` (through ctx's client), stdout chunks to fd 1 and
 * stderr chunks to fd 2, byte for byte, as `o` says; with o->progress, its progress
 * chunks go to a cli_progress display, ended before anything below is printed (without,
 * they are dropped). Returns the exit status of the command:
 *   - without follow: CLI_EXIT_OK;
 *   - with follow: cli_run_exit() of the terminal run, after printing "prismq: run "
 *     and cli_print_outcome() on stderr unless it COMPLETED; or CLI_EXIT_INTERRUPTED
 *     after a Ctrl-C (follow mode calls cli_catch_sigint), with a hint on stderr saying
 *     how to reattach or cancel;
 *   - CLI_EXIT_ERROR after printing an RPC or write error; but a reader that went away
 *     (EPIPE) ends it quietly with CLI_EXIT_BROKEN_PIPE, as SIGPIPE ends a filter. */
int cli_follow(cli_ctx *ctx, const char *run_id, const cli_follow_opts *o);

/* ---- the system (cli-os.c) ---- */

/* getopt_long(argc, argv, shortopts, longopts, NULL), whose messages for a bad option on
 * stderr are glibc's on every system: "prismq run: unrecognized option '--bogus'",
 * "invalid option -- 'x'", "option '--timeout' requires an argument", "option '--json'
 * doesn't allow an argument", "option '--l' is ambiguous; possibilities: ...", named by
 * argv[0]. Returns what getopt_long does. */
int cli_os_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts);

/* Sets the program up, first thing in main, with main's argc and argv: on Windows the
 * arguments are read again as UTF-8 (what the server takes; the C library's are in the
 * ANSI code page), the standard descriptors go to binary mode (no "\r\n" for "\n": output
 * byte for byte, as on Linux) and a console shows UTF-8 while prismq runs. Nothing
 * elsewhere. */
void cli_os_init(int *argc, char ***argv);

/* Makes Ctrl-C (SIGINT) call fn instead of ending the program, unless SIGINT is ignored
 * (a background job). fn must be async-signal-safe; on Windows it runs on a thread the
 * console starts for the Ctrl-C. */
void cli_os_on_interrupt(void (*fn)(void));

/* pthread_create(out, NULL, fn, arg) for a thread that takes no signal (they stay with
 * the main thread). Returns pthread_create's value. */
int cli_os_thread_start(pthread_t *out, void *(*fn)(void *), void *arg);

/* Non-zero if fd is a terminal that takes ANSI cursor controls: a tty with $TERM set and
 * not "dumb"; on Windows a console, which is asked to take them (Windows 10 and later),
 * $TERM "dumb" excepted. */
int cli_os_ansi_terminal(int fd);

/* The width in columns of the terminal on fd, or 0 if fd is none or it does not say. */
unsigned cli_os_term_width(int fd);

/* Non-zero if descriptors a and b write to the same file (or the same console). */
int cli_os_same_file(int a, int b);

#endif
