/* prismq wait: waits for a run to end (Runner/WaitRun) and exits with its outcome. */
#include "cli.h"

/* How much longer than the wait itself the call may take (the answer's way back). */
#define SLACK_MS 30000

static int wait_exec(cli_ctx *ctx, int argc, char **argv) {
  static const struct option longopts[] = {
      {"timeout", required_argument, NULL, 't'}, CLI_OPT_JSON, CLI_OPT_HELP, {NULL, 0, NULL, 0}};
  const struct cli_cmd *cmd = &cli_cmd_wait;
  Prismq__Runner__V1__WaitRunRequest req = PRISMQ__RUNNER__V1__WAIT_RUN_REQUEST__INIT;
  int json = 0, opt, rc;
  while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (opt) {
    case 't':
      if ((rc = cli_opt_duration(&req.timeout_ms, cmd, "timeout", optarg)) != 0) return rc;
      break;
    case 'j': json = 1; break;
    default: return cli_opt_other(cmd, opt);
    }
  }
  if ((rc = cli_check_args(cmd, argc, argv, 1, 1)) != 0) return rc;
  prismq_client *c = cli_client(ctx);
  if (!c) return CLI_EXIT_ERROR;
  req.run_id = argv[optind];
  uint64_t deadline = req.timeout_ms ? (uint64_t)req.timeout_ms + SLACK_MS : PRISMQ_NO_DEADLINE;
  cli_run *run = NULL;
  prismq_status st = prismq_wait_run(
      &run, c, &req, deadline < PRISMQ_NO_DEADLINE ? (uint32_t)deadline : PRISMQ_NO_DEADLINE);
  if (st.code != PRISMQ_CODE_OK) return cli_rpc_error(&st);
  if (json)
    cli_json_message(stdout, &run->base);
  else
    cli_print_outcome(stdout, run);
  rc = cli_run_exit(run);
  prismq_run_free(run);
  return rc;
}

const struct cli_cmd cli_cmd_wait = {
    "wait",
    "RUN [--timeout DURATION] [--json]",
    "Wait for a run to end; exit with its outcome",
    "Prints \"RUN STATUS\", with the exit code, signal or reason when it failed.\n"
    "Exit status: 0 the run completed; its exit code when it failed; 128 + N when signal\n"
    "N killed it; 75 cancelled; 124 timed out; 69 lost; 127 it could not start; 99 it is\n"
    "still queued or running when --timeout passed.\n"
    "\n"
    "Options:\n"
    "  --timeout DURATION  wait at most this long (500ms, 30s, 5m, 1h), then print the run\n"
    "                      as it is; default: until the run ends\n"
    "  --json              print the Run as JSON instead\n",
    wait_exec,
};
