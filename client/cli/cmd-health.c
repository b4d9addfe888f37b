/* prismq health: the server's serving status (grpc.health.v1.Health/Check). */
#include "cli.h"

/* grpc.health.v1.HealthCheckResponse.ServingStatus names, by enum prismq_serving. */
static const char *const serving_names[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};

static int health_exec(cli_ctx *ctx, int argc, char **argv) {
  static const struct option longopts[] = {CLI_OPT_JSON, CLI_OPT_HELP, {NULL, 0, NULL, 0}};
  int json = 0, opt, rc, serving = PRISMQ_SERVING_UNKNOWN;
  while ((opt = cli_os_getopt(argc, argv, "h", longopts)) != -1) {
    if (opt != 'j') return cli_opt_other(&cli_cmd_health, opt);
    json = 1;
  }
  if ((rc = cli_check_args(&cli_cmd_health, argc, argv, 0, 1)) != 0) return rc;
  prismq_client *c = cli_client(ctx);
  if (!c) return CLI_EXIT_ERROR;
  prismq_status st = prismq_health(&serving, c, optind < argc ? argv[optind] : NULL, 0);
  if (st.code != PRISMQ_CODE_OK) return cli_rpc_error(&st);
  const char *name =
      serving >= 0 && serving <= PRISMQ_SERVICE_UNKNOWN ? serving_names[serving] : "UNKNOWN";
  if (json) {
    /* A grpc.health.v1.HealthCheckResponse, as the other commands print theirs. */
    fputs("{\n  \"status\": ", stdout);
    cli_json_string(stdout, name);
    fputs("\n}\n", stdout);
  } else {
    puts(name);
  }
  return serving == PRISMQ_SERVING ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}

const struct cli_cmd cli_cmd_health = {
    "health",
    "[SERVICE] [--json]",
    "Check that the server is serving",
    "Prints the serving status of the server, or of SERVICE (prismq.runner.v1.Runner,\n"
    "prismq.admin.v1.Admin): SERVING, NOT_SERVING, SERVICE_UNKNOWN or UNKNOWN.\n"
    "Exits 0 when SERVING, 1 otherwise (an unknown SERVICE is NOT_FOUND).\n"
    "\n"
    "Options:\n"
    "  --json  print {\"status\": \"SERVING\"} (a HealthCheckResponse) instead\n",
    health_exec,
};
