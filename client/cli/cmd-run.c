/* prismq run: starts a run of a module (Runner/StartRun), and with -f follows it. */
#include <stdlib.h>

#include "cli.h"

static int run_exec(cli_ctx *ctx, int argc, char **argv) {
  static const struct option longopts[] = {
      {"param", required_argument, NULL, 'p'},
      {"label", required_argument, NULL, 'l'},
      {"timeout", required_argument, NULL, 't'},
      {"follow", no_argument, NULL, 'f'},
      {"no-progress", no_argument, NULL, 'P'},
      {"request-id", required_argument, NULL, 'r'},
      {"preset", required_argument, NULL, 's'},
      CLI_OPT_JSON,
      CLI_OPT_HELP,
      {NULL, 0, NULL, 0},
  };
  const struct cli_cmd *cmd = &cli_cmd_run;
  Prismq__Runner__V1__StartRunRequest req = PRISMQ__RUNNER__V1__START_RUN_REQUEST__INIT;
  cli_map params = {0, NULL}, labels = {0, NULL};
  cli_run *run = NULL;
  int json = 0, follow = 0, progress = 1, opt, code = 0;
  while (code == 0 && (opt = cli_os_getopt(argc, argv, "p:fh", longopts)) != -1) {
    switch (opt) {
    case 'p':
      code =
          cli_opt_map(&params, &prismq__runner__v1__start_run_request__parameters_entry__descriptor,
                      cmd, "param", optarg);
      break;
    case 'l':
      code = cli_opt_map(&labels, &prismq__runner__v1__start_run_request__labels_entry__descriptor,
                         cmd, "label", optarg);
      break;
    case 't': code = cli_opt_duration(&req.timeout_ms, cmd, "timeout", optarg); break;
    case 'f': follow = 1; break;
    case 'P': progress = 0; break;
    case 'r': req.request_id = optarg; break;
    case 's': req.preset = optarg; break;
    case 'j': json = 1; break;
    default: code = cli_opt_other(cmd, opt); goto out;
    }
  }
  if (code != 0 || (code = cli_check_args(cmd, argc, argv, 1, 1)) != 0) goto out;
  if (json && follow) {
    code = cli_usage_error(cmd, "--json and --follow exclude each other (the output is not JSON)");
    goto out;
  }
  req.module_id = argv[optind];
  req.n_parameters = params.n;
  req.parameters = (Prismq__Runner__V1__StartRunRequest__ParametersEntry **)params.items;
  req.n_labels = labels.n;
  req.labels = (Prismq__Runner__V1__StartRunRequest__LabelsEntry **)labels.items;

  prismq_client *c = cli_client(ctx);
  if (!c) {
    code = CLI_EXIT_ERROR;
    goto out;
  }
  /* Before the start: a Ctrl-C while it is under way still leaves us the run's id to
   * print with the hint. */
  if (follow) cli_catch_sigint();
  prismq_status st = prismq_start_run(&run, c, &req, 0);
  if (st.code != PRISMQ_CODE_OK) {
    code = cli_rpc_error(&st);
  } else if (follow) {
    cli_follow_opts fo = CLI_FOLLOW_OPTS_INIT;
    fo.follow = 1;
    fo.progress = progress;
    code = cli_follow(ctx, run->run_id, &fo);
  } else if (json) {
    cli_json_message(stdout, &run->base);
  } else {
    printf("%s\n", run->run_id);
  }

out:
  prismq_run_free(run);
  cli_map_clear(&labels);
  cli_map_clear(&params);
  return code;
}

const struct cli_cmd cli_cmd_run = {
    "run",
    "MODULE [-p KEY=VALUE]... [--label KEY=VALUE]... [--timeout DURATION]\n"
    "                  [--request-id ID] [-f [--no-progress] | --json]",
    "Start a run of a module; print its id, or follow its output with -f",
    "Options:\n"
    "  --preset NAME          start from the values of this preset of the module (prismq\n"
    "                         presets MODULE lists them); -p values override them\n"
    "  -p, --param KEY=VALUE  a parameter of the module (repeatable)\n"
    "  --label KEY=VALUE      a label of the run, for ls --label (repeatable)\n"
    "  --timeout DURATION     the server kills the run after this long (500ms, 30s, 5m, 1h);\n"
    "                         default: the module's timeout\n"
    "  --request-id ID        an idempotency key: the same ID again returns the same run\n"
    "  -f, --follow           copy the run's stdout to stdout and its stderr to stderr, byte\n"
    "                         for byte, until it ends; then exit with its outcome (below).\n"
    "                         The run's progress reports show on stderr: a status line on a\n"
    "                         terminal, else lines \"progress DONE/TOTAL PCT% MESSAGE\"\n"
    "  --no-progress          with -f: no progress on stderr, only the run's own stderr\n"
    "  --json                 print the new run as JSON (a Run) instead of its id\n"
    "\n"
    "Exit status with -f: 0 the run completed; its exit code when it failed; 128 + N when\n"
    "signal N killed it; 75 cancelled; 124 timed out; 69 lost; 127 it could not start.\n"
    "When the run did not complete, a last line on stderr says how it ended.\n"
    "Ctrl-C detaches (exit 130) and leaves the run running; 'prismq logs RUN -f' reattaches\n"
    "and 'prismq cancel RUN' stops it. Errors exit 1, usage errors 2.\n",
    run_exec,
};
