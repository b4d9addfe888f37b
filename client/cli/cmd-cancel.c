/* prismq cancel: stops a run (Runner/CancelRun). */
#include "cli.h"

/* The server's grace when the request says 0, for our deadline. */
#define SERVER_GRACE_MS 5000
/* How much longer than the grace the call may take. */
#define SLACK_MS 30000

static int cancel_exec(cli_ctx *ctx, int argc, char **argv) {
  static const struct option longopts[] = {
      {"grace", required_argument, NULL, 'g'}, CLI_OPT_JSON, CLI_OPT_HELP, {NULL, 0, NULL, 0}};
  const struct cli_cmd *cmd = &cli_cmd_cancel;
  Prismq__Runner__V1__CancelRunRequest req = PRISMQ__RUNNER__V1__CANCEL_RUN_REQUEST__INIT;
  int json = 0, opt, rc;
  while ((opt = cli_os_getopt(argc, argv, "h", longopts)) != -1) {
    switch (opt) {
    case 'g':
      if ((rc = cli_opt_duration(&req.grace_ms, cmd, "grace", optarg)) != 0) return rc;
      break;
    case 'j': json = 1; break;
    default: return cli_opt_other(cmd, opt);
    }
  }
  if ((rc = cli_check_args(cmd, argc, argv, 1, 1)) != 0) return rc;
  prismq_client *c = cli_client(ctx);
  if (!c) return CLI_EXIT_ERROR;
  req.run_id = argv[optind];
  uint64_t deadline = (uint64_t)(req.grace_ms ? req.grace_ms : SERVER_GRACE_MS) + SLACK_MS;
  cli_run *run = NULL;
  prismq_status st = prismq_cancel_run(
      &run, c, &req, deadline < PRISMQ_NO_DEADLINE ? (uint32_t)deadline : PRISMQ_NO_DEADLINE);
  if (st.code != PRISMQ_CODE_OK) return cli_rpc_error(&st);
  if (json)
    cli_json_message(stdout, &run->base);
  else
    cli_print_outcome(stdout, run);
  prismq_run_free(run);
  return CLI_EXIT_OK;
}

const struct cli_cmd cli_cmd_cancel = {
    "cancel",
    "RUN [--grace DURATION] [--json]",
    "Stop a run: SIGTERM to its processes, SIGKILL after the grace",
    "Returns once the run has ended, and prints \"RUN CANCELLED: reason\".\n"
    "A run already ended is an error (FAILED_PRECONDITION, exit 1).\n"
    "\n"
    "Options:\n"
    "  --grace DURATION  time between SIGTERM and SIGKILL (500ms, 5s...); default: the\n"
    "                    server's (5s)\n"
    "  --json            print the cancelled Run as JSON instead\n",
    cancel_exec,
};
