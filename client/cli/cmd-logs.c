/* prismq logs: a run's output (Runner/StreamOutput), replayed, and live with -f. */
#include "cli.h"

static int logs_exec(cli_ctx *ctx, int argc, char **argv) {
  static const struct option longopts[] = {
      {"follow", no_argument, NULL, 'f'},
      {"stdout", no_argument, NULL, 'o'},
      {"stderr", no_argument, NULL, 'e'},
      {"from", required_argument, NULL, 's'},
      CLI_OPT_HELP,
      {NULL, 0, NULL, 0},
  };
  const struct cli_cmd *cmd = &cli_cmd_logs;
  cli_follow_opts fo = CLI_FOLLOW_OPTS_INIT;
  int opt, rc;
  while ((opt = cli_os_getopt(argc, argv, "fh", longopts)) != -1) {
    switch (opt) {
    case 'f': fo.follow = 1; break;
    case 'o': fo.stream |= PRISMQ__RUNNER__V1__OUTPUT_STREAM__OUTPUT_STREAM_STDOUT; break;
    case 'e': fo.stream |= PRISMQ__RUNNER__V1__OUTPUT_STREAM__OUTPUT_STREAM_STDERR; break;
    case 's':
      if (cli_parse_uint(&fo.start_seq, optarg, UINT64_MAX) < 0)
        return cli_usage_error(cmd, "--from %s: not a sequence number", optarg);
      break;
    default: return cli_opt_other(cmd, opt);
    }
  }
  if ((rc = cli_check_args(cmd, argc, argv, 1, 1)) != 0) return rc;
  /* STDOUT | STDERR: both given, which is no filter. */
  if (fo.stream == (PRISMQ__RUNNER__V1__OUTPUT_STREAM__OUTPUT_STREAM_STDOUT |
                    PRISMQ__RUNNER__V1__OUTPUT_STREAM__OUTPUT_STREAM_STDERR))
    fo.stream = PRISMQ__RUNNER__V1__OUTPUT_STREAM__OUTPUT_STREAM_UNSPECIFIED;
  return cli_follow(ctx, argv[optind], &fo);
}

const struct cli_cmd cli_cmd_logs = {
    "logs",
    "RUN [-f] [--stdout | --stderr] [--from SEQ]",
    "Print a run's output; follow it live with -f",
    "The run's stdout goes to stdout and its stderr to stderr, byte for byte.\n"
    "\n"
    "Options:\n"
    "  -f, --follow  go on live until the run ends, then exit with its outcome as\n"
    "                'prismq run -f' does (Ctrl-C detaches, exit 130; the run goes on)\n"
    "  --stdout      only the run's stdout\n"
    "  --stderr      only the run's stderr\n"
    "  --from SEQ    start at output chunk SEQ (chunks count from 1 over both streams;\n"
    "                Ctrl-C on a follow prints where to resume)\n",
    logs_exec,
};
