/* prismq status: one run as it is now (Runner/GetRun). */
#include <inttypes.h>

#include "cli.h"

/* "LABEL       TEXT" or "LABEL       KEY=VALUE"; lines after the first are indented
 * under the first. */
static void field(const char *label, const char *key, const char *value) {
  static const char newline[] = "\n            ";
  printf("%-11s ", label);
  cli_put_text(stdout, key, newline);
  if (value) {
    putchar('=');
    cli_put_text(stdout, value, newline);
  }
  putchar('\n');
}

static void print_run(const cli_run *r) {
  char buf[96], a[32], b[32];
  field("run", r->run_id, NULL);
  field("module", r->module_id, NULL);
  field("status", cli_status_name(r->status), NULL);
  cli_format_exit(buf, sizeof buf, r);
  field("exit", buf, NULL);
  if (r->error_message[0]) field("error", r->error_message, NULL);
  if (r->request_id[0]) field("request id", r->request_id, NULL);
  if (r->owner[0]) field("owner", r->owner, NULL);
  cli_format_time(buf, sizeof buf, r->created_at_ms);
  field("created", buf, NULL);
  cli_format_time(buf, sizeof buf, r->started_at_ms);
  field("started", buf, NULL);
  cli_format_time(buf, sizeof buf, r->finished_at_ms);
  field("finished", buf, NULL);
  if (r->started_at_ms > 0 && r->finished_at_ms >= r->started_at_ms) {
    cli_format_duration(buf, sizeof buf, (uint64_t)(r->finished_at_ms - r->started_at_ms));
    field("duration", buf, NULL);
  }
  if (r->pid) {
    snprintf(buf, sizeof buf, "%" PRId32, r->pid);
    field("pid", buf, NULL);
  }
  snprintf(buf, sizeof buf, "%" PRIu64 " bytes stdout, %" PRIu64 " bytes stderr", r->stdout_bytes,
           r->stderr_bytes);
  field("output", buf, NULL);
  cli_format_duration(a, sizeof a, r->user_cpu_ms);
  cli_format_duration(b, sizeof b, r->sys_cpu_ms);
  snprintf(buf, sizeof buf, "user %s, system %s", a, b);
  field("cpu", buf, NULL);
  snprintf(buf, sizeof buf, "%" PRIu64 " KiB", r->max_rss_kb);
  field("max rss", buf, NULL);
  for (size_t i = 0; i < r->n_parameters; i++)
    field("parameter", r->parameters[i]->key, r->parameters[i]->value);
  for (size_t i = 0; i < r->n_labels; i++) field("label", r->labels[i]->key, r->labels[i]->value);
}

static int status_exec(cli_ctx *ctx, int argc, char **argv) {
  static const struct option longopts[] = {CLI_OPT_JSON, CLI_OPT_HELP, {NULL, 0, NULL, 0}};
  int json = 0, opt, rc;
  while ((opt = cli_os_getopt(argc, argv, "h", longopts)) != -1) {
    if (opt != 'j') return cli_opt_other(&cli_cmd_status, opt);
    json = 1;
  }
  if ((rc = cli_check_args(&cli_cmd_status, argc, argv, 1, 1)) != 0) return rc;
  prismq_client *c = cli_client(ctx);
  if (!c) return CLI_EXIT_ERROR;
  Prismq__Runner__V1__GetRunRequest req = PRISMQ__RUNNER__V1__GET_RUN_REQUEST__INIT;
  req.run_id = argv[optind];
  cli_run *run = NULL;
  prismq_status st = prismq_get_run(&run, c, &req, 0);
  if (st.code != PRISMQ_CODE_OK) return cli_rpc_error(&st);
  if (json)
    cli_json_message(stdout, &run->base);
  else
    print_run(run);
  prismq_run_free(run);
  return CLI_EXIT_OK;
}

const struct cli_cmd cli_cmd_status = {
    "status",
    "RUN [--json]",
    "Show a run as it is now",
    "Prints the run's fields, one per line: status, exit (code or SIGNAME), error (why it\n"
    "failed: the end of its stderr, or why it could not start), who started it (owner),\n"
    "times, resources,\n"
    "parameters and labels. Exits 0 whatever the run's status ('prismq wait' exits with it).\n"
    "\n"
    "Options:\n"
    "  --json  print the Run as JSON instead\n",
    status_exec,
};
