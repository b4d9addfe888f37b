/* prismq wait: waits for a run to end (Runner/WaitRun) and exits with its outcome,
 * showing the run's progress meanwhile. */
#include "cli.h"

/* How much longer than the wait itself the call may take (the answer's way back). */
#define SLACK_MS 30000
/* The step of a wait that shows progress: each answer brings the run's latest report.
 * Polling WaitRun costs a small call twice a second;
 * following StreamOutput instead would replay the run's whole output to find its end. */
#define STEP_MS 500

/* The deadline of a WaitRun call waiting timeout_ms (0: until the run ends). */
static uint32_t call_deadline(uint32_t timeout_ms) {
  uint64_t d = timeout_ms ? (uint64_t)timeout_ms + SLACK_MS : PRISMQ_NO_DEADLINE;
  return d < PRISMQ_NO_DEADLINE ? (uint32_t)d : PRISMQ_NO_DEADLINE;
}

/* WaitRun as req says, in steps of STEP_MS, showing the progress of each answer on
 * stderr (cli_progress). Returns the last call's status, and on OK sets *out to its
 * answer: the run once it ended, or as it is when req->timeout_ms (0: none) passed. */
static prismq_status wait_showing_progress(cli_run **out, prismq_client *c,
                                           const Prismq__Runner__V1__WaitRunRequest *req) {
  Prismq__Runner__V1__WaitRunRequest step = *req;
  int64_t end = cli_now_ms(CLOCK_MONOTONIC) + req->timeout_ms;
  cli_progress *shown = NULL;
  cli_run *run = NULL;
  prismq_status st;
  for (int first = 1;; first = 0) {
    int64_t left = req->timeout_ms ? end - cli_now_ms(CLOCK_MONOTONIC) : STEP_MS;
    step.timeout_ms = left < 1 ? 1 : left < STEP_MS ? (uint32_t)left : STEP_MS;
    cli_run *next = NULL;
    st = prismq_wait_run(&next, c, &step, call_deadline(step.timeout_ms));
    if (st.code != PRISMQ_CODE_OK) break;
    prismq_run_free(run);
    run = next;
    /* A run that had ended already has no progress left to watch. */
    if (run->progress && !(first && cli_status_terminal(run->status))) {
      if (!shown) shown = cli_progress_new(cli_progress_mode(), run->started_at_ms);
      cli_progress_update(shown, run->progress);
    }
    if (cli_status_terminal(run->status) || (req->timeout_ms && cli_now_ms(CLOCK_MONOTONIC) >= end))
      break;
  }
  cli_progress_end(shown);
  if (st.code == PRISMQ_CODE_OK)
    *out = run;
  else
    prismq_run_free(run);
  return st;
}

static int wait_exec(cli_ctx *ctx, int argc, char **argv) {
  static const struct option longopts[] = {
      {"timeout", required_argument, NULL, 't'},
      {"no-progress", no_argument, NULL, 'P'},
      CLI_OPT_JSON,
      CLI_OPT_HELP,
      {NULL, 0, NULL, 0},
  };
  const struct cli_cmd *cmd = &cli_cmd_wait;
  Prismq__Runner__V1__WaitRunRequest req = PRISMQ__RUNNER__V1__WAIT_RUN_REQUEST__INIT;
  int json = 0, progress = 1, opt, rc;
  while ((opt = cli_os_getopt(argc, argv, "h", longopts)) != -1) {
    switch (opt) {
    case 't':
      if ((rc = cli_opt_duration(&req.timeout_ms, cmd, "timeout", optarg)) != 0) return rc;
      break;
    case 'P': progress = 0; break;
    case 'j': json = 1; break;
    default: return cli_opt_other(cmd, opt);
    }
  }
  if ((rc = cli_check_args(cmd, argc, argv, 1, 1)) != 0) return rc;
  prismq_client *c = cli_client(ctx);
  if (!c) return CLI_EXIT_ERROR;
  req.run_id = argv[optind];
  cli_run *run = NULL;
  /* With --json (or --no-progress): one call, as long as it takes. */
  prismq_status st = progress && !json
                         ? wait_showing_progress(&run, c, &req)
                         : prismq_wait_run(&run, c, &req, call_deadline(req.timeout_ms));
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
    "RUN [--timeout DURATION] [--no-progress] [--json]",
    "Wait for a run to end; exit with its outcome",
    "Prints \"RUN STATUS\", with the exit code, signal or reason when it failed.\n"
    "Exit status: 0 the run completed; its exit code when it failed; 128 + N when signal\n"
    "N killed it; 75 cancelled; 124 timed out; 69 lost; 127 it could not start; 99 it is\n"
    "still queued or running when --timeout passed.\n"
    "While the run goes on, its progress reports show on stderr: on a terminal as a status\n"
    "line (percentage, elapsed time, rate, message) left behind as a last line, else as\n"
    "plain lines (\"progress 3/10 30% message\") when the percentage or message changes.\n"
    "\n"
    "Options:\n"
    "  --timeout DURATION  wait at most this long (500ms, 30s, 5m, 1h), then print the run\n"
    "                      as it is; default: until the run ends\n"
    "  --no-progress       show no progress: one WaitRun call, as without a terminal\n"
    "  --json              print the Run as JSON instead (and show no progress)\n",
    wait_exec,
};
