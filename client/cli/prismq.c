/* prismq: the operators' command line of PrismQ Runner.
 *
 *   prismq [--target ADDR] [--tls-ca FILE --tls-cert FILE --tls-key FILE --tls-server-name NAME]
 *          COMMAND [ARGS]
 *   prismq --version
 *
 * This file holds the global options, the command table and the dispatch; each
 * command is in cmd-NAME.c. docs/cli.md is the manual. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "prismq_version.h"

/* In the order `prismq --help` lists them. */
static const struct cli_cmd *const commands[] = {
    &cli_cmd_modules, &cli_cmd_presets, &cli_cmd_run,    &cli_cmd_ls,     &cli_cmd_status,
    &cli_cmd_logs,    &cli_cmd_wait,    &cli_cmd_cancel, &cli_cmd_health, &cli_cmd_help,
};

#define NCOMMANDS (sizeof commands / sizeof commands[0])

const struct cli_cmd *cli_find_cmd(const char *name) {
  for (size_t i = 0; i < NCOMMANDS; i++)
    if (strcmp(commands[i]->name, name) == 0) return commands[i];
  return NULL;
}

void cli_print_usage(FILE *f) {
  fputs(
      "usage: prismq [--target ADDR] [--tls-ca FILE --tls-cert FILE --tls-key FILE\n"
      "              --tls-server-name NAME] COMMAND [ARGS]\n"
      "       prismq --version\n\nCommands:\n",
      f);
  for (size_t i = 0; i < NCOMMANDS; i++)
    fprintf(f, "  %-8s %s\n", commands[i]->name, commands[i]->summary);
  fputs(
      "\nGlobal options:\n"
      "  --target ADDR    the server: HOST:PORT, tls://HOST:PORT, unix:PATH, unix:///PATH,\n"
      "                   unix-abstract:NAME, dns:/ipv4:/ipv6:... (default: $PRISMQ_TARGET,\n"
      "                   else 127.0.0.1:50051)\n"
      "  --tls-ca FILE    CA certificates to verify the server with ($PRISMQ_TLS_CA);\n"
      "                   any --tls-* option, or a tls:// target, means TLS\n"
      "  --tls-cert FILE  client certificate ($PRISMQ_TLS_CERT)\n"
      "  --tls-key FILE   its private key ($PRISMQ_TLS_KEY)\n"
      "  --tls-server-name NAME  the name the server certificate must match\n"
      "                   ($PRISMQ_TLS_SERVER_NAME; default: the target's host)\n"
      "  -h, --help       this help\n"
      "  --version        the version and the git commit built from\n"
      "\n"
      "'prismq help COMMAND' or 'prismq COMMAND --help' describes a command.\n"
      "Exit status: 0 success, 1 error, 2 usage error; run -f, logs -f and wait exit with\n"
      "the run's outcome: its exit code, 128 + signal, 75 cancelled, 124 timed out, 69 lost,\n"
      "127 could not start, 99 still running; 130 when Ctrl-C detached from the run.\n",
      f);
}

/* An environment variable, or NULL when unset or empty. */
static const char *env(const char *name) {
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"target", required_argument, NULL, 't'},
      {"tls-ca", required_argument, NULL, 'a'},
      {"tls-cert", required_argument, NULL, 'c'},
      {"tls-key", required_argument, NULL, 'k'},
      {"tls-server-name", required_argument, NULL, 'n'},
      {"version", no_argument, NULL, 'V'},
      CLI_OPT_HELP,
      {NULL, 0, NULL, 0},
  };
  cli_os_init(&argc, &argv);
  cli_ctx ctx = {PRISMQ_CLIENT_OPTS_INIT, NULL, NULL};
  ctx.opts.ca_file = env("PRISMQ_TLS_CA");
  ctx.opts.cert_file = env("PRISMQ_TLS_CERT");
  ctx.opts.key_file = env("PRISMQ_TLS_KEY");
  ctx.opts.server_name = env("PRISMQ_TLS_SERVER_NAME");
  /* "+": the options end at the command; the rest are the command's. */
  int opt;
  while ((opt = cli_os_getopt(argc, argv, "+h", longopts)) != -1) {
    switch (opt) {
    case 't': ctx.opts.target = ctx.target_arg = optarg; break;
    case 'a': ctx.opts.ca_file = optarg; break;
    case 'c': ctx.opts.cert_file = optarg; break;
    case 'k': ctx.opts.key_file = optarg; break;
    case 'n': ctx.opts.server_name = optarg; break;
    case 'h': cli_print_usage(stdout); return CLI_EXIT_OK;
    case 'V': printf("prismq %s (commit %s)\n", PRISMQ_VERSION, PRISMQ_COMMIT); return CLI_EXIT_OK;
    default: fputs("Try 'prismq --help'.\n", stderr); return CLI_EXIT_USAGE;
    }
  }
  if (optind >= argc) {
    cli_print_usage(stderr);
    return CLI_EXIT_USAGE;
  }
  const struct cli_cmd *cmd = cli_find_cmd(argv[optind]);
  if (!cmd) {
    fprintf(stderr, "prismq: unknown command '%s'\nTry 'prismq --help'.\n", argv[optind]);
    return CLI_EXIT_USAGE;
  }

  /* The command parses argv[first..] as its own argv, named for getopt's messages. */
  char name[64];
  snprintf(name, sizeof name, "prismq %s", cmd->name);
  int first = optind;
  argv[first] = name;
  optind = 0; /* start afresh, permuting again (glibc's getopt, and mingw-w64's) */
  int code = cmd->exec(&ctx, argc - first, argv + first);
  prismq_client_free(ctx.client);
  if (fflush(stdout) != 0 && code == CLI_EXIT_OK) {
    fprintf(stderr, "prismq: writing the output: %s\n", strerror(errno));
    code = CLI_EXIT_ERROR;
  }
  return code;
}
