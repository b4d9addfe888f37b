/* prismq modules: the modules the server can run (Runner/ListModules). */
#include <stdlib.h>

#include "cli.h"

/* The parameters of a module as a usage synopsis: "action [arg=-]". The caller frees
 * the string. */
static char *param_synopsis(const Prismq__Runner__V1__Module *m) {
  char *s = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&s, &len);
  if (!f) return cli_xstrdup("?");
  for (size_t i = 0; i < m->n_parameters; i++) {
    const Prismq__Runner__V1__ParameterSpec *p = m->parameters[i];
    if (p->required)
      fprintf(f, "%s%s", i ? " " : "", p->name);
    else
      fprintf(f, "%s[%s=%s]", i ? " " : "", p->name, p->default_value);
  }
  if (fclose(f) != 0) {
    free(s);
    return cli_xstrdup("?");
  }
  return s;
}

static void print_table(const Prismq__Runner__V1__ListModulesResponse *resp) {
  cli_table *t =
      cli_table_new(5, (const char *[]){"ID", "NAME", "PARAMETERS", "TIMEOUT", "DESCRIPTION"});
  for (size_t i = 0; i < resp->n_modules; i++) {
    const Prismq__Runner__V1__Module *m = resp->modules[i];
    char timeout[32] = "-";
    if (m->timeout_ms) cli_format_duration(timeout, sizeof timeout, m->timeout_ms);
    char *params = param_synopsis(m);
    cli_table_add(t, (const char *[]){m->id, m->name, params, timeout, m->description});
    free(params);
  }
  cli_table_print(t, stdout);
  cli_table_free(t);
}

static int modules_exec(cli_ctx *ctx, int argc, char **argv) {
  static const struct option longopts[] = {CLI_OPT_JSON, CLI_OPT_HELP, {NULL, 0, NULL, 0}};
  int json = 0, opt, rc;
  while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    if (opt != 'j') return cli_opt_other(&cli_cmd_modules, opt);
    json = 1;
  }
  if ((rc = cli_check_args(&cli_cmd_modules, argc, argv, 0, 0)) != 0) return rc;
  prismq_client *c = cli_client(ctx);
  if (!c) return CLI_EXIT_ERROR;
  Prismq__Runner__V1__ListModulesResponse *resp = NULL;
  prismq_status st = prismq_list_modules(&resp, c, NULL, 0);
  if (st.code != PRISMQ_CODE_OK) return cli_rpc_error(&st);
  if (json)
    cli_json_message(stdout, &resp->base);
  else
    print_table(resp);
  prismq__runner__v1__list_modules_response__free_unpacked(resp, NULL);
  return CLI_EXIT_OK;
}

const struct cli_cmd cli_cmd_modules = {
    "modules",
    "[--json]",
    "List the modules the server can run",
    "Prints a table: ID, NAME, PARAMETERS (required ones bare, optional ones as\n"
    "[NAME=DEFAULT]), TIMEOUT (\"-\": none) and DESCRIPTION.\n"
    "\n"
    "Options:\n"
    "  --json  print the ListModulesResponse as JSON instead: {\"modules\": [...]}\n",
    modules_exec,
};
