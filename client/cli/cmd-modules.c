/* prismq modules: the modules the server can run (Runner/ListModules). */
#include <stdlib.h>

#include "cli.h"

/* What a parameter of type spec accepts, after its name, appended to *s: ":integer(1..10)",
 * ":fast|slow", ":path(/srv)", ":boolean", "(2..4 bytes)"; nothing for a plain string. */
static void put_type(char **s, const Prismq__Runner__V1__ParameterSpec *p) {
  switch (p->type) {
  case PRISMQ__RUNNER__V1__PARAMETER_TYPE__PARAMETER_TYPE_INTEGER:
  case PRISMQ__RUNNER__V1__PARAMETER_TYPE__PARAMETER_TYPE_NUMBER: {
    int integer = p->type == PRISMQ__RUNNER__V1__PARAMETER_TYPE__PARAMETER_TYPE_INTEGER;
    int has_min = p->min_bound_case == PRISMQ__RUNNER__V1__PARAMETER_SPEC__MIN_BOUND_MIN;
    int has_max = p->max_bound_case == PRISMQ__RUNNER__V1__PARAMETER_SPEC__MAX_BOUND_MAX;
    cli_append(s, "%s", integer ? ":integer" : ":number");
    if (has_min || has_max) {
      cli_append(s, "(");
      if (has_min) cli_append(s, "%.15g", p->min);
      cli_append(s, "..");
      if (has_max) cli_append(s, "%.15g", p->max);
      cli_append(s, ")");
    }
    break;
  }
  case PRISMQ__RUNNER__V1__PARAMETER_TYPE__PARAMETER_TYPE_BOOLEAN: cli_append(s, ":boolean"); break;
  case PRISMQ__RUNNER__V1__PARAMETER_TYPE__PARAMETER_TYPE_SELECT:
    for (size_t i = 0; i < p->n_options; i++) cli_append(s, "%c%s", i ? '|' : ':', p->options[i]);
    break;
  case PRISMQ__RUNNER__V1__PARAMETER_TYPE__PARAMETER_TYPE_SECRET: cli_append(s, ":secret"); break;
  case PRISMQ__RUNNER__V1__PARAMETER_TYPE__PARAMETER_TYPE_PATH:
    cli_append(s, ":path(%s)", p->base_dir);
    break;
  default: break;
  }
  if (p->min_length || p->max_length) {
    cli_append(s, "(%u..", p->min_length);
    if (p->max_length) cli_append(s, "%u", p->max_length);
    cli_append(s, " bytes)");
  }
}

/* The parameters of a module as a usage synopsis: required ones as NAME:TYPE, optional
 * ones as [NAME:TYPE=DEFAULT] ("n:integer(1..10) [mode:fast|slow=fast]"). The caller
 * frees the string. */
static char *param_synopsis(const Prismq__Runner__V1__Module *m) {
  char *s = cli_xstrdup("");
  for (size_t i = 0; i < m->n_parameters; i++) {
    const Prismq__Runner__V1__ParameterSpec *p = m->parameters[i];
    cli_append(&s, "%s%s%s", i ? " " : "", p->required ? "" : "[", p->name);
    put_type(&s, p);
    if (!p->required) cli_append(&s, "%s%s]", p->default_value[0] ? "=" : "", p->default_value);
  }
  return s;
}

static void print_table(const Prismq__Runner__V1__ListModulesResponse *resp) {
  cli_table *t = cli_table_new(
      6, (const char *[]){"ID", "NAME", "CATEGORY", "PARAMETERS", "TIMEOUT", "DESCRIPTION"});
  for (size_t i = 0; i < resp->n_modules; i++) {
    const Prismq__Runner__V1__Module *m = resp->modules[i];
    char timeout[32] = "-", *name = NULL;
    if (m->timeout_ms) cli_format_duration(timeout, sizeof timeout, m->timeout_ms);
    if (asprintf(&name, "%s%s", m->name, m->enabled ? "" : " (disabled)") < 0) name = NULL;
    char *params = param_synopsis(m);
    cli_table_add(t,
                  (const char *[]){m->id, name ? name : m->name, m->category[0] ? m->category : "-",
                                   params, timeout, m->description});
    free(params);
    free(name);
  }
  cli_table_print(t, stdout);
  cli_table_free(t);
}

static int modules_exec(cli_ctx *ctx, int argc, char **argv) {
  static const struct option longopts[] = {{"category", required_argument, NULL, 'c'},
                                           {"tag", required_argument, NULL, 't'},
                                           CLI_OPT_JSON,
                                           CLI_OPT_HELP,
                                           {NULL, 0, NULL, 0}};
  Prismq__Runner__V1__ListModulesRequest req = PRISMQ__RUNNER__V1__LIST_MODULES_REQUEST__INIT;
  char *tags[8];
  int json = 0, opt, rc;
  while ((opt = cli_os_getopt(argc, argv, "h", longopts)) != -1) {
    switch (opt) {
    case 'c': req.category = optarg; break;
    case 't':
      if (req.n_tags == sizeof tags / sizeof *tags)
        return cli_usage_error(&cli_cmd_modules, "at most %zu --tag options",
                               sizeof tags / sizeof *tags);
      tags[req.n_tags++] = optarg;
      break;
    case 'j': json = 1; break;
    default: return cli_opt_other(&cli_cmd_modules, opt);
    }
  }
  req.tags = tags;
  if ((rc = cli_check_args(&cli_cmd_modules, argc, argv, 0, 0)) != 0) return rc;
  prismq_client *c = cli_client(ctx);
  if (!c) return CLI_EXIT_ERROR;
  Prismq__Runner__V1__ListModulesResponse *resp = NULL;
  prismq_status st = prismq_list_modules(&resp, c, &req, 0);
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
    "[--category CATEGORY] [--tag TAG]... [--json]",
    "List the modules the server can run",
    "Prints a table: ID, NAME (\"(disabled)\" after a module that cannot be started),\n"
    "CATEGORY, PARAMETERS, TIMEOUT (\"-\": none) and DESCRIPTION. PARAMETERS shows each\n"
    "parameter as NAME:TYPE, optional ones in brackets with their default:\n"
    "  n:integer(1..10)      an integer from 1 to 10, required\n"
    "  [ratio:number(0..)=1] a number from 0, default 1\n"
    "  [dry:boolean=false]   true or false (also yes/no, on/off, 1/0)\n"
    "  [mode:fast|slow=fast] one of the options\n"
    "  [out:path(/srv)]      a path that must stay under /srv\n"
    "  [tag(2..4 bytes)]     text of 2 to 4 bytes (a plain string shows no type)\n"
    "\n"
    "Options:\n"
    "  --category CATEGORY  only modules of this category\n"
    "  --tag TAG            only modules with this tag (repeatable: all of them)\n"
    "  --json               print the ListModulesResponse as JSON instead: {\"modules\": [...]}\n",
    modules_exec,
};
