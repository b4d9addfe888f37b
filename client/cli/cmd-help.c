/* prismq help: the usage of prismq or of one command. */
#include "cli.h"

static int help_exec(cli_ctx *ctx, int argc, char **argv) {
  static const struct option longopts[] = {CLI_OPT_HELP, {NULL, 0, NULL, 0}};
  int opt, rc;
  (void)ctx;
  if ((opt = cli_os_getopt(argc, argv, "h", longopts)) != -1)
    return cli_opt_other(&cli_cmd_help, opt); /* help takes no option but --help */
  if ((rc = cli_check_args(&cli_cmd_help, argc, argv, 0, 1)) != 0) return rc;
  if (optind == argc) {
    cli_print_usage(stdout);
    return CLI_EXIT_OK;
  }
  const struct cli_cmd *cmd = cli_find_cmd(argv[optind]);
  if (!cmd) return cli_usage_error(&cli_cmd_help, "unknown command '%s'", argv[optind]);
  cli_print_help(cmd, stdout);
  return CLI_EXIT_OK;
}

const struct cli_cmd cli_cmd_help = {
    "help",
    "[COMMAND]",
    "Describe prismq, or one command",
    "'prismq help COMMAND' is 'prismq COMMAND --help'.\n",
    help_exec,
};
